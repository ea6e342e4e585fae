"""The capture policy at work: per-version budgets, captured records, and where they go.

The inference service hands every answered request of a version served with a capture policy
(``ServerConfig.capture``, :mod:`edgeloop.serving.capture`) to :meth:`Capturer.observe`, on
the event loop, after the answer is ready. Each row is scored (top-1, margin), checked against
the policy and the version's budget; a kept row becomes one record::

    {"type": "sample", "model", "model_version", "request_id", "sample_id", "row",
     "reasons": ["uncertain", ...], "at": RFC 3339 UTC,
     "inputs": [{"name", "datatype", "shape", "b64"}], "outputs": [{...}],
     "predicted", "confidence", "margin"}

(tensors with ``name``, ``datatype`` (numpy's, little-endian: ``<f4``), ``shape`` (one row's,
batch axis 1) and ``b64``: the row's bytes in base64, see :class:`Kept`). A label posted later
for a captured request (:mod:`edgeloop.serving.feedback`) gives a ``{"type": "label", "model",
"model_version", "request_id", "sample_id", "label", "at"}`` record, so the control plane
can join it by sample id.

Records go to ``sinks`` as :class:`Kept` rows (callables that must not block; they encode a
row off the event loop, so a kept row costs the request path a copy of its tensors): the
agent's telemetry buffer (the
outbox kind ``capture``) or, on a standalone server, a
:class:`~edgeloop.serving.capture_files.CaptureFile` (JSON Lines written off the event loop
once a second).
"""

from __future__ import annotations

import bisect
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from edgeloop.serving.capture import (
    NO_SCORES,
    Budget,
    CaptureSpec,
    Reason,
    Scores,
    decide,
    row_scores,
    scores,
)
from edgeloop.serving.capture_record import Kept, iso_utc, one_row
from edgeloop.serving.watch import EventType, MonitorEvent, probabilities

log = logging.getLogger(__name__)
Record = dict[str, Any]
MAX_ROWS = 256  # rows of one request looked at (a larger batch: its first 256)
_REMEMBERED = 10_000  # captured sample ids kept for labels that come later (~1 MB)
_ALARMS_KEPT = 64  # drift alarm times kept per version
_SHORT_ROW = 1024  # class scores of one row scored in plain Python (capture.row_scores)
Array = np.ndarray[Any, Any]


def _scores(first: Array | None, rows: int) -> list[Scores]:
    """Each row's scores from the first output (empty: it holds no class scores)."""
    if first is None or first.ndim < 1 or first.size <= rows:
        return []
    if rows == 1 and first.size <= _SHORT_ROW:
        return [row_scores(first.reshape(-1).tolist())]
    return scores(probabilities(first[:rows]))


def _rows(first: Array | None) -> int:
    """The rows of a request looked at (its first output's batch axis, at most MAX_ROWS)."""
    rows = int(first.shape[0]) if first is not None and first.ndim else 1
    return min(rows, MAX_ROWS)


Sink = Callable[[Kept], None]


class Capturer:
    """Every watched version's budget, the drift alarms' times, and the sinks (module doc)."""

    def __init__(self) -> None:
        self.sinks: list[Sink] = []
        self.budgets: dict[tuple[str, str], Budget] = {}
        # each version's last drift alarms' times, oldest first (a row is judged by the last
        # alarm at or before its answer, whatever order the alarms arrived in)
        self._drift_at: dict[tuple[str, str], list[float]] = {}
        self._captured: OrderedDict[tuple[str, str], tuple[str, tuple[str, ...]]] = OrderedDict()
        self.sink_errors = 0

    def budget(self, spec: CaptureSpec, model: str, version: str) -> Budget:
        key = (model, version)
        found = self.budgets.get(key)
        if found is None or (found.spec is not spec and found.spec != spec):  # a new policy:
            found = self.budgets[key] = Budget(spec, model, version)  # the version starts afresh
        return found

    def monitor_event(self, event: MonitorEvent) -> None:
        """A drift alarm opens the version's drift window (a watch sink; never blocks)."""
        if event.type is EventType.DRIFT:
            times = self._drift_at.setdefault((event.model, event.version), [])
            bisect.insort(times, event.at)
            del times[:-_ALARMS_KEPT]

    def observe(
        self,
        spec: CaptureSpec,
        model: str,
        version: str,
        request_id: str | None,
        feeds: dict[str, Array],
        outputs: dict[str, Array],
    ) -> int:
        """Score each row of an answered request, keep those the policy and the budget allow;
        the number kept. (Deciding requests in batches instead, their rows scored in one array
        operation, was measured no better in a server: docs/data.md.)"""
        budget = self.budget(spec, model, version)
        first = next(iter(outputs.values()), None)
        rows = _rows(first)
        table = _scores(first, rows)
        now = time.time()
        alarms = self._drift_at.get((model, version), [])
        since = bisect.bisect_right(alarms, now)  # the last alarm at or before the answer
        age = now - alarms[since - 1] if since else None
        rid = request_id or ""
        kept = 0
        budget.counts["seen"] += rows
        for row in range(rows):
            scored = table[row] if table else NO_SCORES
            reasons = decide(spec, scored, age, budget.rng.random())
            if not reasons or not budget.precheck(scored.predicted):
                continue
            rid = rid or uuid.uuid4().hex  # a request without an id gets one when kept
            sample_id = rid if rows == 1 else f"{rid}#{row}"
            head = self._head(model, version, rid, sample_id, row, reasons)
            head.update(
                predicted=scored.predicted, confidence=scored.confidence, margin=scored.margin
            )
            kept_row = Kept(head, {
                "inputs": [(n, one_row(a, row, rows)) for n, a in feeds.items()],
                "outputs": [(n, one_row(a, row, rows)) for n, a in outputs.items()],
            }, at=now)  # fmt: skip
            if not budget.admit(scored.predicted, kept_row.size):
                continue
            budget.kept_by_reason.update(r.value for r in reasons)
            self._remember(model, rid, version, sample_id)
            self._emit(kept_row)
            kept += 1
        return kept

    def _head(
        self,
        model: str,
        version: str,
        rid: str,
        sample_id: str,
        row: int,
        reasons: tuple[Reason, ...],
    ) -> Record:
        return {
            "type": "sample",
            "model": model,
            "model_version": version,
            "request_id": rid,
            "sample_id": sample_id,
            "row": row,
            "reasons": [r.value for r in reasons],
            "at": None,  # Kept.at: written off the event loop, in this place in the record
        }

    def _remember(self, model: str, rid: str, version: str, sample_id: str) -> None:
        """Remember ``sample_id`` for a later label of ``rid`` (a client may reuse a request id:
        the ids of one request are distinct and at most ``MAX_ROWS``, so this stays bounded)."""
        key = (model, rid)
        held = self._captured.pop(key, None)
        ids = held[1] if held is not None and held[0] == version else ()
        self._captured[key] = (version, ids if sample_id in ids else (*ids, sample_id))
        while len(self._captured) > _REMEMBERED:
            self._captured.popitem(last=False)

    def label(self, model: str, labelled: Iterable[tuple[str, tuple[int, ...]]]) -> None:
        """Labels applied to answered requests (a feedback sink): those of captured requests
        become ``label`` records."""
        now = iso_utc(time.time())
        for rid, classes in labelled:
            held = self._captured.get((model, rid))
            if held is None:
                continue
            version, sample_ids = held
            for sample_id in sample_ids:
                row = int(sample_id.rpartition("#")[2]) if "#" in sample_id else 0
                if row >= len(classes):
                    continue
                self._emit_label(
                    {"type": "label", "model": model, "model_version": version,
                     "request_id": rid, "sample_id": sample_id, "label": classes[row], "at": now}
                )  # fmt: skip

    def _emit_label(self, record: Record) -> None:
        self._emit(Kept(record, {}))

    def _emit(self, kept: Kept) -> None:
        for sink in self.sinks:
            try:
                sink(kept)
            except Exception:  # a sink's failure never reaches the request path
                self.sink_errors += 1
                log.exception("capture sink failed")

    def status(self) -> dict[str, Any]:
        """Per served version (``model:version``): the policy, bytes and counts."""
        return {
            f"{model}:{version}": budget.to_dict()
            for (model, version), budget in sorted(self.budgets.items())
        }
