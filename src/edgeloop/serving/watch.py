"""One served version's drift monitor, fed after each answer and off the request path.

A version is watched when it has a reference profile (:mod:`edgeloop.monitoring`): a file
``<stem>.profile.npz`` beside its default model file (``cnn.onnx`` -> ``cnn.profile.npz``,
``7/model.onnx`` -> ``7/model.profile.npz``; the agent's slot folders use the same layout), or
``ServerConfig.profiles[model]``. No profile, or one refused (unreadable, another input shape),
means no monitor: the version serves all the same and says why in its status.

Per answered request the service calls :meth:`Watch.observe` with the request's first input
and first output. A share ``monitor_sample_rate`` of requests is kept (deterministically: the
n-th request is kept when ``floor(n * rate)`` steps up), their rows are put in a bounded queue
(``monitor_queue`` rows; more are counted as dropped) and the queue is drained by a callback
the event loop runs after the current request's step, at most ``_DRAIN_ROWS`` rows at a time,
so a burst never holds the loop for long. The monitor's memory is fixed at fit
(``DriftMonitor.state_bytes``); the queue's is bounded by its length.

Outputs are read as :mod:`edgeloop.serving.predict` reads them: a row that is a distribution
is used as is, any other row (logits) goes through a softmax.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from edgeloop.core.errors import EdgeError
from edgeloop.core.types import TensorSpec
from edgeloop.monitoring import DriftAlarm, DriftMonitor, ReferenceProfile
from edgeloop.monitoring.outputs import distributions
from edgeloop.serving.repository import DEFAULT_VARIANT, ModelSource

log = logging.getLogger(__name__)
PROFILE_SUFFIX = ".profile.npz"
_DRAIN_ROWS = 32  # rows updated per loop callback (~0.1 ms each on digits' 64 features)
_MAX_PROFILE_BYTES = 64 << 20
# Rows between two looks at the accuracy (a performance report costs ~10 updates); labels
# trigger a look too.
_DEGRADATION_EVERY = 50
Array = np.ndarray[Any, Any]


class WatchState(StrEnum):
    ACTIVE = "active"
    NO_PROFILE = "no profile"
    REFUSED = "profile refused"


class EventType(StrEnum):
    """The telemetry event types a watch raises (docs/telemetry.md)."""

    DRIFT = "drift"
    QUALITY = "quality"
    DEGRADATION = "degradation"


@dataclass(frozen=True, slots=True)
class MonitorEvent:
    """An alarm of one served version, as it goes to sinks (the agent's outbox) and the view."""

    type: EventType
    model: str
    version: str
    kind: str
    score: float
    threshold: float
    index: int
    top_features: tuple[tuple[int, float], ...]
    at: float
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type.value,
            "model": self.model,
            "model_version": self.version,
            "kind": self.kind,
            "score": self.score,
            "threshold": self.threshold,
            "sample_index": self.index,
            "top_features": [{"feature": f, "shift_std": s} for f, s in self.top_features],
            "at": datetime.fromtimestamp(self.at, UTC).isoformat(timespec="milliseconds"),
            "detail": self.detail,
        }


Sink = Callable[[MonitorEvent], None]


def profile_path(sources: tuple[ModelSource, ...], explicit: Path | None) -> Path:
    """Where a version's profile is looked for (see the module docstring)."""
    if explicit is not None:
        return explicit
    source = next((s for s in sources if s.variant == DEFAULT_VARIANT), sources[0])
    base = source.path.name[: -len(source.path.suffix) or None]
    if source.variant != DEFAULT_VARIANT and base.endswith("." + source.variant):
        base = base[: -len(source.variant) - 1]
    return source.path.with_name(base + PROFILE_SUFFIX)


def load_monitor(path: Path, inputs: tuple[TensorSpec, ...]) -> tuple[DriftMonitor | None, str]:
    """The monitor for ``path``'s profile, or None and why (never raises: a profile is optional).

    Reads the file: call it in a worker thread.
    """
    if not path.is_file():
        return None, f"{WatchState.NO_PROFILE.value}: no file {str(path)!r}"
    try:
        size = path.stat().st_size
        if size > _MAX_PROFILE_BYTES:
            return None, f"{WatchState.REFUSED.value}: {size} bytes, over {_MAX_PROFILE_BYTES}"
        monitor = DriftMonitor.from_profile(ReferenceProfile.from_bytes(path.read_bytes()))
    except (OSError, EdgeError) as exc:
        why = exc.message if isinstance(exc, EdgeError) else str(exc)
        return None, f"{WatchState.REFUSED.value}: {path.name}: {why}"
    want = monitor.profile.sample_shape
    per_sample = inputs[0].shape[1:] if inputs else ()
    fits = len(per_sample) == len(want) and all(
        d is None or d == w for d, w in zip(per_sample, want, strict=True)
    )
    if not fits:
        return None, (
            f"{WatchState.REFUSED.value}: {path.name} profiles samples of shape {list(want)}; "
            f"input {inputs[0].name if inputs else '?'!r} takes {list(per_sample)} per sample"
        )
    return monitor, f"{WatchState.ACTIVE.value}: {path.name}"


def probabilities(rows: Array) -> Array:
    """Rows of class scores as probabilities: distributions (a quantized one renormalised, see
    :func:`edgeloop.monitoring.outputs.distributions`) as they are, logits via softmax."""
    x, ok = distributions(rows)
    if ok.all():
        return x
    e = np.exp(x - x.max(axis=1, keepdims=True))
    soft = e / e.sum(axis=1, keepdims=True)
    return np.where(ok[:, None], x, soft)


class Watch:
    """A version's monitor, its queue, its counters and its last alarm."""

    def __init__(
        self,
        model: str,
        version: str,
        monitor: DriftMonitor | None,
        status: str,
        *,
        sample_rate: float = 1.0,
        queue_rows: int = 1024,
        degradation_drop: float = 0.1,
        sinks: list[Sink] | None = None,
    ) -> None:
        self.model, self.version = model, version
        self.monitor = monitor
        self.status = status
        self.sample_rate = sample_rate
        self.degradation_drop = degradation_drop
        self.sinks = sinks if sinks is not None else []
        self._queue: deque[tuple[Array, Array | None]] = deque()
        self._queue_rows = queue_rows
        self._scheduled = False
        self.requests = 0  # answered requests seen
        self.dropped = 0  # rows not monitored: the queue was full
        self.refused = 0  # rows the monitor refused (wrong shape, outputs of another width)
        self.alarms: dict[str, int] = {}
        self.last_alarm: MonitorEvent | None = None
        self._quality_mark = 0  # nonfinite + wrong-shape count at the last quality event
        self._degraded = False
        self._bad = 0  # rows with NaN/inf or of the wrong shape
        self._rows = 0
        self.update_s = 0.0  # time spent in monitor updates

    @property
    def active(self) -> bool:
        return self.monitor is not None

    @property
    def classes(self) -> int | None:
        out = self.monitor.profile.outputs if self.monitor is not None else None
        return out.num_classes if out is not None else None

    def observe(self, x: Array | None, y: Array | None) -> None:
        """Take one answered request (first input, first output; both batch-first)."""
        if self.monitor is None or x is None:
            return
        self.requests += 1
        n, rate = self.requests, self.sample_rate
        if not (rate > 0 and math.floor(n * rate) > math.floor((n - 1) * rate)):
            return
        rows = x.shape[0] if x.ndim else 1
        if len(self._queue) + rows > self._queue_rows:
            self.dropped += rows
            return
        probs = None
        if y is not None and self.classes is not None and y.ndim and y.shape[0] == rows:
            probs = probabilities(y)
        # NaN scores (from a NaN input) carry no class: the input alone is counted.
        kept: list[Array | None] = [None] * rows
        if probs is not None:
            finite: Array = np.asarray(np.isfinite(probs).all(axis=1))
            kept = [row if ok else None for row, ok in zip(probs, finite, strict=True)]
        for i in range(rows):
            self._queue.append((x[i], kept[i]))
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._drain)

    def _drain(self) -> None:
        started = time.perf_counter()
        for _ in range(min(_DRAIN_ROWS, len(self._queue))):
            self.update(*self._queue.popleft())
        self.update_s += time.perf_counter() - started
        if self._queue:
            asyncio.get_running_loop().call_soon(self._drain)
        else:
            self._scheduled = False

    @property
    def queued(self) -> int:
        return len(self._queue)

    def flush(self) -> None:
        """Update every queued row now (the JSON view and /metrics read a settled state)."""
        started = time.perf_counter()
        while self._queue:
            self.update(*self._queue.popleft())
        self.update_s += time.perf_counter() - started

    def update(self, x: Array, probs: Array | None) -> None:
        """One row into the monitor; its alarms out to the sinks. Never raises."""
        monitor = self.monitor
        if monitor is None:
            return
        bad = not bool(np.isfinite(x).all())
        try:
            alarm = monitor.update(x, probs)
        except EdgeError as exc:
            self.refused += 1
            bad = bad or x.shape != monitor.profile.sample_shape
            log.debug("%s:%s monitor refused a row: %s", self.model, self.version, exc.message)
            alarm = None
        if alarm is not None:
            self._emit(self._drift_event(alarm))
        if bad:  # reading the quality report costs more than an update: only when it moved
            self._bad += 1
            self._check_quality()
        self._rows += 1
        if self._rows % _DEGRADATION_EVERY == 0:
            self.check_degradation()

    def _drift_event(self, alarm: DriftAlarm) -> MonitorEvent:
        return MonitorEvent(
            EventType.DRIFT, self.model, self.version, alarm.kind.value, alarm.score,
            alarm.threshold, alarm.index,
            tuple((c.feature, c.shift_std) for c in alarm.top_features), time.time(),
            f"{alarm.part.value} score crossed its threshold",
        )  # fmt: skip

    def _check_quality(self) -> None:
        """A quality event when bad samples first appear, then at each tenfold count."""
        if self.monitor is None:
            return
        bad = self._bad
        if bad < max(1, self._quality_mark * 10):
            return
        self._quality_mark = bad
        q = self.monitor.quality
        self._emit(
            MonitorEvent(
                EventType.QUALITY, self.model, self.version, "data_quality", float(bad), 0.0,
                max(q.samples - 1, 0), (), time.time(),
                f"{q.nonfinite_samples} sample(s) with NaN/inf, {q.wrong_shape} of the wrong "
                f"shape, {q.out_of_range} value(s) outside the reference range",
            )
        )  # fmt: skip

    def check_degradation(self) -> None:
        """A degradation event when accuracy (true, else estimated) falls ``degradation_drop``
        below the reference accuracy over a full window; again only after it recovered."""
        if self.monitor is None:
            return
        out = self.monitor.profile.outputs
        if out is None or out.reference_accuracy is None:
            return
        perf = self.monitor.performance
        window = perf.window
        accuracy = perf.accuracy if perf.labelled >= window else None
        kind = "accuracy"
        if accuracy is None and self.monitor.samples_seen >= window:
            accuracy, kind = perf.estimated_accuracy, "estimated_accuracy"
        if accuracy is None:
            return
        floor = out.reference_accuracy - self.degradation_drop
        if accuracy >= floor + self.degradation_drop / 2:
            self._degraded = False
        if accuracy >= floor or self._degraded:
            return
        self._degraded = True
        self._emit(
            MonitorEvent(
                EventType.DEGRADATION, self.model, self.version, kind, accuracy, floor,
                self.monitor.samples_seen - 1, (), time.time(),
                f"{kind} {accuracy:.3f} is below the reference accuracy "
                f"{out.reference_accuracy:.3f} minus {self.degradation_drop}",
            )
        )  # fmt: skip

    def _emit(self, event: MonitorEvent) -> None:
        key = event.kind if event.type is EventType.DRIFT else event.type.value
        self.alarms[key] = self.alarms.get(key, 0) + 1
        self.last_alarm = event
        for sink in self.sinks:
            try:
                sink(event)
            except Exception:  # a sink's failure never reaches the request path
                log.exception("monitor event sink failed")

    def score_ratios(self) -> dict[str, float]:
        """Per drift kind, the largest score over its threshold (above 1: past the line)."""
        if self.monitor is None:
            return {}
        profile = self.monitor.profile
        stats = {"input": profile.input}
        if profile.outputs is not None:
            out = profile.outputs
            stats.update(prediction=out.prediction, confidence=out.confidence)
        ratios = {}
        for kind, scores in self.monitor.scores.items():
            thresholds = stats[kind.value].thresholds
            ratios[kind.value] = max(s / t for s, t in zip(scores, thresholds, strict=True))
        return ratios
