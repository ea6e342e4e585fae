"""The drift history's cost per telemetry batch (docs/ui.md): store ``--batches`` batches of one
metrics item each (``--nodes`` nodes in turn, one watched version) through the real ingest
(``telemetry.prepare`` + ``store_rows`` in a write transaction) on a fresh SQLite control plane,
with the history kept and with ``drift_history.record`` replaced by a no-op, alternating rounds
of 100 batches. Prints one JSON object: wall ms per batch (p50, p95) for each.

    .venv/bin/python bench/drift_history_bench.py [--batches 2000] [--nodes 200]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgeloop.control import drift_history, telemetry  # noqa: E402
from edgeloop.control.plane import ControlPlane  # noqa: E402


def _item(k: int) -> dict[str, Any]:
    watched = {"version": "1", "drifting": k % 20 == 0, "drift_ratio": {"input": 0.3 + k % 7},
               "performance": {"accuracy": 0.9, "estimated_accuracy": 0.8}}  # fmt: skip
    return {
        "id": str(uuid.uuid4()),
        "kind": "metrics",
        "created_at": datetime.now(UTC).isoformat(),
        "payload": {"model": "lin", "model_version": "1", "monitoring": {"lin": watched}},
    }


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))], 3)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=2000)
    parser.add_argument("--nodes", type=int, default=200)
    args = parser.parse_args()
    real = drift_history.record
    times: dict[str, list[float]] = {"with history": [], "without": []}
    with tempfile.TemporaryDirectory() as tmp:
        plane, _ = ControlPlane.open(Path(tmp) / "home")
        for k in range(args.batches):
            keep = (k // 100) % 2 == 0
            drift_history.record = real if keep else (lambda *a, **kw: 0)  # type: ignore[assignment]
            node = f"node-{k % args.nodes}"
            started = time.perf_counter()
            rows, rejected = telemetry.prepare(node, [_item(k)], time.time())
            with plane.db.write() as conn:
                telemetry.store_rows(conn, node, rows, rejected)
            took = (time.perf_counter() - started) * 1000
            times["with history" if keep else "without"].append(took)
        plane.close()
    out = {k: {"batches": len(v), "p50_ms": _pct(v, 0.5), "p95_ms": _pct(v, 0.95)}
           for k, v in times.items()}  # fmt: skip
    out["load_average_1m"] = round(os.getloadavg()[0], 2)  # type: ignore[assignment]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
