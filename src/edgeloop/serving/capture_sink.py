"""The capture policy at work: per-version budgets, captured records, and where they go.

The inference service hands every answered request of a version served with a capture policy
(``ServerConfig.capture``, :mod:`edgeloop.serving.capture`) to :meth:`Capturer.defer`, on
the event loop, after the answer is ready: it is held (by reference) and decided with the
others answered since, at most ``DEFER_REQUESTS`` requests or ``DEFER_S`` seconds later, and
before any label or status read (:meth:`Capturer.flush`): their rows are scored in one array
operation (scoring each request on its own cost more than the rest of capture together,
docs/data.md). Each row is scored (top-1, margin), checked against
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

import asyncio
import bisect
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeloop.serving.capture import (
    NO_SCORES,
    Budget,
    CaptureSpec,
    Reason,
    Scores,
    decide_rows,
    row_scores,
    score_arrays,
    scores,
)
from edgeloop.serving.capture_record import Kept, iso_utc, one_row
from edgeloop.serving.watch import EventType, MonitorEvent, probabilities

log = logging.getLogger(__name__)
Record = dict[str, Any]
MAX_ROWS = 256  # rows of one request looked at (a larger batch: its first 256)
_REMEMBERED = 10_000  # captured sample ids kept for labels that come later (~1 MB)
DEFER_REQUESTS = 256  # answered requests held before they are decided together
DEFER_S = 0.05  # ... or this long after the first of them (on the running loop)
_ALARMS_KEPT = 64  # drift alarm times kept per version (a held request is at most DEFER_S old)
_SHORT_ROW = 1024  # class scores of one row scored in plain Python (capture.row_scores)
Array = np.ndarray[Any, Any]


def _scores(first: Array | None, rows: int) -> list[Scores]:
    """Each row's scores from the first output (empty: it holds no class scores)."""
    if first is None or first.ndim < 1 or first.size <= rows:
        return []
    if rows == 1 and first.size <= _SHORT_ROW:
        return [row_scores(first.reshape(-1).tolist())]
    return scores(probabilities(first[:rows]))


@dataclass(frozen=True, slots=True)
class _Answered:
    """An answered request held for the next decision (:meth:`Capturer.defer`)."""

    spec: CaptureSpec
    model: str
    version: str
    request_id: str | None
    feeds: dict[str, Array]
    outputs: dict[str, Array]
    at: float  # time.time() when it was handed over


def _rows(first: Array | None) -> int:
    """The rows of a request looked at (its first output's batch axis, at most MAX_ROWS)."""
    rows = int(first.shape[0]) if first is not None and first.ndim else 1
    return min(rows, MAX_ROWS)


def _score_rows(firsts: list[Array | None], rows: list[int]) -> tuple[Array, Array, Array]:
    """(predicted, confidence, margin) of every row looked at, one request after the other:
    when every first output is a 2-D array of the same class scores (one model version's
    answers), in one array operation; otherwise request by request (:func:`_scores`)."""
    shapes = {f.shape[1] if f is not None and f.ndim == 2 else -1 for f in firsts}
    if len(shapes) == 1 and shapes.pop() >= 2:
        parts = [f[:r] for f, r in zip(firsts, rows, strict=True) if f is not None]
        stacked = np.concatenate(parts) if len(parts) > 1 else parts[0]
        return score_arrays(probabilities(stacked))
    table = [
        row
        for first, n in zip(firsts, rows, strict=True)
        for row in (_scores(first, n) or [NO_SCORES] * n)
    ]
    return (
        np.array([-1 if r.predicted is None else r.predicted for r in table], dtype=np.int64),
        np.array([np.nan if r.confidence is None else r.confidence for r in table]),
        np.array([np.nan if r.margin is None else r.margin for r in table]),
    )


Sink = Callable[[Kept], None]


class Capturer:
    """Every watched version's budget, the drift alarms' times, and the sinks (module doc)."""

    def __init__(self) -> None:
        self.sinks: list[Sink] = []
        self.budgets: dict[tuple[str, str], Budget] = {}
        # each version's last drift alarms' times, oldest first (a held request is judged by
        # the last alarm at or before its own time, not by one raised after it was answered)
        self._drift_at: dict[tuple[str, str], list[float]] = {}
        self._captured: OrderedDict[tuple[str, str], tuple[str, tuple[str, ...]]] = OrderedDict()
        self.sink_errors = 0
        self._pending: list[_Answered] = []
        self._scheduled = False

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

    def defer(
        self,
        spec: CaptureSpec,
        model: str,
        version: str,
        request_id: str | None,
        feeds: dict[str, Array],
        outputs: dict[str, Array],
    ) -> None:
        """Hold an answered request to be decided with the next ones (module docstring); with
        no running event loop it is decided at once."""
        self._pending.append(_Answered(spec, model, version, request_id, feeds, outputs,
                                       time.time()))  # fmt: skip
        if len(self._pending) >= DEFER_REQUESTS:
            self.flush()
        elif not self._scheduled:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._scheduled = True
            loop.call_later(DEFER_S, self._due)

    def _due(self) -> None:
        self._scheduled = False
        self.flush()

    def observe(
        self,
        spec: CaptureSpec,
        model: str,
        version: str,
        request_id: str | None,
        feeds: dict[str, Array],
        outputs: dict[str, Array],
    ) -> int:
        """Decide an answered request now (after those held): score each row, keep those the
        policy and the budget allow; the number of this request's rows kept."""
        self.flush()
        self._pending.append(_Answered(spec, model, version, request_id, feeds, outputs,
                                       time.time()))  # fmt: skip
        return self.flush()

    def flush(self) -> int:
        """Decide the held requests, in the order they were answered (each version's on its
        own: their budgets are); the number of rows kept. Never raises: a version's requests
        whose decision fails are logged and skipped."""
        pending, self._pending = self._pending, []
        runs: dict[tuple[str, str], list[_Answered]] = {}
        for item in pending:
            runs.setdefault((item.model, item.version), []).append(item)
        kept = 0
        for (model, version), items in runs.items():
            start = 0
            for end in range(1, len(items) + 1):  # a run of one policy (it may change)
                if end < len(items) and items[end].spec is items[start].spec:
                    continue
                try:
                    kept += self._decide(items[start:end])
                except Exception:  # capturing never fails the server
                    self.sink_errors += 1
                    log.exception("%s:%s: capturing requests failed", model, version)
                start = end
        return kept

    def _decide(self, items: list[_Answered]) -> int:
        """Decide requests of one version under one policy: every row scored and checked at
        once (capture.score_arrays, capture.decide_rows), then the rows that a reason holds
        for kept as far as the budget allows, in order."""
        spec, model, version = items[0].spec, items[0].model, items[0].version
        budget = self.budget(spec, model, version)
        firsts = [next(iter(item.outputs.values()), None) for item in items]
        rows = [_rows(first) for first in firsts]
        total = sum(rows)
        budget.counts["seen"] += total
        predicted, confidence, margin = _score_rows(firsts, rows)
        at = np.repeat(np.array([item.at for item in items]), rows)
        alarms = np.asarray(self._drift_at.get((model, version), ()), dtype=np.float64)
        age = np.full(total, np.nan)  # seconds since the last alarm at or before the answer
        if alarms.size:
            since = np.searchsorted(alarms, at, side="right")
            age = np.where(since > 0, at - alarms[np.maximum(since - 1, 0)], np.nan)
        held = decide_rows(spec, confidence, margin, age, budget.rng.random(total))
        hits = np.logical_or.reduce([hit for _, hit in held]) if held else np.zeros(total, bool)
        starts = np.cumsum([0, *rows])
        ids: dict[int, str] = {}  # a request without an id gets one, for all its rows
        kept = 0
        for j in np.flatnonzero(hits).tolist():
            i = int(np.searchsorted(starts, j, side="right")) - 1
            item, row = items[i], j - int(starts[i])
            rid = item.request_id or ids.setdefault(i, uuid.uuid4().hex)
            p = int(predicted[j])
            scored = NO_SCORES if p < 0 else Scores(p, float(confidence[j]), float(margin[j]))
            reasons = tuple(reason for reason, hit in held if hit[j])
            if self._keep(budget, item, rid, row, rows[i], scored, reasons):
                kept += 1
        return kept

    def _keep(
        self,
        budget: Budget,
        item: _Answered,
        rid: str,
        row: int,
        rows: int,
        scored: Scores,
        reasons: tuple[Reason, ...],
    ) -> bool:
        """Keep one row that a reason holds for, if the budget allows (counted either way)."""
        if not budget.precheck(scored.predicted):
            return False
        sample_id = rid if rows == 1 else f"{rid}#{row}"
        head = self._head(item.model, item.version, rid, sample_id, row, reasons)
        head.update(predicted=scored.predicted, confidence=scored.confidence, margin=scored.margin)
        kept_row = Kept(head, {
            "inputs": [(n, one_row(a, row, rows)) for n, a in item.feeds.items()],
            "outputs": [(n, one_row(a, row, rows)) for n, a in item.outputs.items()],
        }, at=item.at)  # fmt: skip
        if not budget.admit(scored.predicted, kept_row.size):
            return False
        budget.kept_by_reason.update(r.value for r in reasons)
        self._remember(item.model, rid, item.version, sample_id)
        self._emit(kept_row)
        return True

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
        self.flush()  # a request answered just before its label may still be held
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
        self.flush()
        return {
            f"{model}:{version}": budget.to_dict()
            for (model, version), budget in sorted(self.budgets.items())
        }
