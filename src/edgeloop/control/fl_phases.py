"""Where a federated round's time went (the round record's ``phases_s``), from its messages."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any


def phases(rows: Sequence[Any], started_at: float, closed_at: float) -> dict[str, Any]:
    """Where a round's time went, on the control plane's clock, in seconds after its
    selection: the first and last model download (a download's time is its last fetch), the
    first and last arrival of each kind of answer, and the close; and the shortest and longest
    of what the clients timed themselves (``fetch_s``: the model's download and check,
    ``train_s``: the training worker's answer), where they said."""
    out: dict[str, Any] = {"close": closed_at - started_at}
    for kind in sorted({str(r.kind) for r in rows}):
        times = [r.received_at - started_at for r in rows if r.kind == kind]
        out[kind] = [min(times), max(times)]
    said = [json.loads(r.metrics) for r in rows if r.kind in ("update", "mask")]
    for key in ("fetch_s", "train_s"):
        times = [m[key] for m in said if key in m]
        if times:
            out[f"client_{key}"] = [min(times), max(times)]
    return out
