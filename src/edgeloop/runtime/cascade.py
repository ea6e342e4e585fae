"""A cascade: a small model answers; inputs it is unsure of go to a large model.

Confidence is the largest softmax probability of a row of the small model's scores (when the
scores already are probabilities, rows summing to 1, they are used as they are). A row holding
NaN or an infinity has confidence 0: the small model's answer for it is a numerical failure,
not a belief, so it escalates at any threshold above 0 (and its scores do not count towards
telling probabilities from logits for the other rows). Rows below
``threshold`` are escalated to the large model: a local loaded model (run in a worker thread)
or an async callable (a parent tier over HTTP, wired by the server). When the large model
fails or times out, the small model's answer stands for those rows and the fallback is counted.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, cast

import numpy as np

from edgeloop.core.errors import ConfigError, DataError
from edgeloop.runtime.engine import Feeds, LoadedModel, Outputs

Runner = Callable[[Feeds], Outputs]
AsyncRunner = Callable[[Feeds], Awaitable[Outputs]]


class Scores(StrEnum):
    """What the score output holds."""

    AUTO = "auto"  # probabilities if every row is in [0, 1] and sums to 1, else logits
    PROBABILITIES = "probabilities"
    LOGITS = "logits"


def confidence(scores: np.ndarray, kind: Scores = Scores.AUTO) -> np.ndarray:
    """Largest class probability per row of a ``(rows, classes)`` score array (pure).

    Always finite, in [0, 1]: a row holding NaN or an infinity gets 0 (module docstring).

    Raises:
        DataError: ``scores`` is not two-dimensional.
    """
    if scores.ndim != 2 or scores.shape[1] < 1:
        raise DataError(
            f"cascade scores have shape {scores.shape}; expected (rows, classes)",
            hint="name the output that holds class scores with score_output=",
        )
    x = scores.astype(np.float64, copy=False)
    finite = np.isfinite(x).all(axis=1)
    if finite.all():
        return _confidence(x, kind)
    conf = np.zeros(x.shape[0])
    if finite.any():
        conf[finite] = _confidence(x[finite], kind)
    return conf


def _confidence(x: np.ndarray, kind: Scores) -> np.ndarray:
    """:func:`confidence` of finite rows."""
    if kind is Scores.PROBABILITIES or (kind is Scores.AUTO and _are_probabilities(x)):
        return np.asarray(x.max(axis=1))
    # Max-shift: exp never overflows. The shift itself may (finite rows spanning more than the
    # float64 range, e.g. [1.8e308, -1e292]); such a difference is -inf and exp of it is 0.
    with np.errstate(over="ignore"):
        shifted = np.exp(x - x.max(axis=1, keepdims=True))
    return np.asarray(shifted.max(axis=1) / shifted.sum(axis=1))


def _are_probabilities(x: np.ndarray) -> bool:
    return bool(np.all(x >= 0) and np.all(x <= 1) and np.allclose(x.sum(axis=1), 1.0, atol=1e-3))


@dataclass(frozen=True, slots=True)
class CascadeResult:
    """Merged outputs; ``escalated`` marks rows sent up, ``answered_by_large`` those it answered."""

    outputs: Outputs
    confidence: np.ndarray
    escalated: np.ndarray
    answered_by_large: np.ndarray
    fallback_reason: str | None


@dataclass(frozen=True, slots=True)
class CascadeStats:
    """Counters: requests, rows, rows escalated, escalations that fell back to the small model."""

    requests: int
    rows: int
    escalated_rows: int
    large_calls: int
    fallbacks: int
    last_fallback: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "rows": self.rows,
            "escalated_rows": self.escalated_rows,
            "large_calls": self.large_calls,
            "fallbacks": self.fallbacks,
            "last_fallback": self.last_fallback,
        }


def _sync(model: Runner | LoadedModel) -> Runner:
    return model.run if isinstance(model, LoadedModel) else model


def _is_async(fn: object) -> bool:
    call = getattr(type(fn), "__call__", None)  # noqa: B004  (objects with an async __call__)
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(call)


class Cascade:
    """Answer with ``small``; escalate rows with confidence below ``threshold`` to ``large``.

    ``score_output`` names the small model's class-score output (default: its first output).
    ``timeout_s`` bounds each call to the large model.
    """

    def __init__(
        self,
        small: Runner | LoadedModel,
        large: Runner | LoadedModel | AsyncRunner,
        threshold: float,
        *,
        score_output: str | None = None,
        scores: Scores = Scores.AUTO,
        timeout_s: float = 10.0,
    ) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ConfigError(
                f"cascade threshold {threshold} is not valid; expected a confidence in (0, 1]",
                hint="e.g. 0.8 escalates rows whose top class has less than 80% probability",
            )
        if not timeout_s > 0:
            raise ConfigError(f"cascade timeout_s={timeout_s} must be positive")
        self.threshold = threshold
        self._small = _sync(small)
        self._large_async: AsyncRunner | None = None
        self._large_sync: Runner | None = None
        if _is_async(large):
            self._large_async = cast(AsyncRunner, large)
        else:
            self._large_sync = _sync(cast(Runner | LoadedModel, large))
        self._score_output = score_output
        self._scores = scores
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._counts = {"requests": 0, "rows": 0, "escalated": 0, "calls": 0, "fallbacks": 0}
        self._last_fallback: str | None = None

    async def predict(self, feeds: Feeds) -> CascadeResult:
        """Run the cascade on ``feeds`` (one or more rows along axis 0).

        Raises:
            DataError: the small model failed, or its score output is missing or not 2-D.
        """
        small_out = await asyncio.to_thread(self._small, feeds)
        conf = confidence(self._pick_scores(small_out), self._scores)
        escalated = conf < self.threshold
        rows = int(conf.shape[0])
        answered = np.zeros(rows, dtype=bool)
        reason: str | None = None
        if escalated.any():
            idx = np.flatnonzero(escalated)
            merged, reason = await self._escalate(feeds, small_out, idx)
            if reason is None:
                small_out, answered = merged, escalated.copy()
        self._count(rows, int(escalated.sum()), reason)
        return CascadeResult(small_out, conf, escalated, answered, reason)

    def stats(self) -> CascadeStats:
        with self._lock:
            c = dict(self._counts)
            last = self._last_fallback
        return CascadeStats(
            c["requests"], c["rows"], c["escalated"], c["calls"], c["fallbacks"], last
        )

    def _pick_scores(self, outputs: Outputs) -> np.ndarray:
        name = self._score_output if self._score_output is not None else next(iter(outputs), None)
        if name is None or name not in outputs:
            raise DataError(
                f"cascade score output {name!r} is not among the small model's outputs "
                f"{list(outputs)}",
                hint="pass score_output= naming the class-score output",
            )
        return outputs[name]

    async def _escalate(
        self, feeds: Feeds, small_out: Outputs, idx: np.ndarray
    ) -> tuple[Outputs, str | None]:
        subset = {name: value[idx] for name, value in feeds.items()}
        try:
            large_out = await asyncio.wait_for(self._call_large(subset), self._timeout_s)
            return _merge(small_out, large_out, idx), None
        except TimeoutError:
            return small_out, f"large model did not answer within {self._timeout_s} s"
        except Exception as exc:  # remote peers fail in many ways; failure is data here
            return small_out, f"large model failed: {type(exc).__name__}: {exc}"

    async def _call_large(self, feeds: Feeds) -> Outputs:
        if self._large_async is not None:
            return await self._large_async(feeds)
        if self._large_sync is None:
            raise ConfigError("cascade has no large model")
        return await asyncio.to_thread(self._large_sync, feeds)

    def _count(self, rows: int, escalated: int, reason: str | None) -> None:
        with self._lock:
            self._counts["requests"] += 1
            self._counts["rows"] += rows
            self._counts["escalated"] += escalated
            self._counts["calls"] += int(escalated > 0)
            if reason is not None:
                self._counts["fallbacks"] += 1
                self._last_fallback = reason


def _merge(small_out: Outputs, large_out: Outputs, idx: np.ndarray) -> Outputs:
    """The small outputs with rows ``idx`` replaced by the large model's.

    Raises:
        DataError: the large model's outputs do not match the small one's names or shapes.
    """
    merged: Outputs = {}
    for name, value in small_out.items():
        if name not in large_out:
            raise DataError(f"large model has no output {name!r}; it returned {list(large_out)}")
        rows = np.asarray(large_out[name])
        if rows.shape != (len(idx), *value.shape[1:]):
            raise DataError(
                f"large model output {name!r} has shape {rows.shape}, "
                f"expected {(len(idx), *value.shape[1:])}"
            )
        out = value.copy()
        out[idx] = rows
        merged[name] = out
    return merged
