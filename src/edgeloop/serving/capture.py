"""What a served model keeps of its traffic for the next training set: the capture policy.

A policy (``edgeloop serve --capture uncertain:0.6,drift,random:0.01``, or a deployment's
``serving.capture``) names the reasons a served row is kept:

- ``uncertain[:T]`` — the top-1 class probability is below ``T`` (default 0.6);
- ``margin[:T]`` — the top-1 minus the top-2 probability is below ``T`` (default 0.1);
- ``drift[:S]`` — the row was answered within ``S`` seconds (default 300) after a drift alarm
  of the version's monitor (:mod:`edgeloop.serving.watch`);
- ``random[:P]`` — a seeded random share ``P`` of rows (default 0.01), drawn per row from a
  generator seeded by ``seed``, model and version, so a run repeats exactly.

Probabilities are read as :mod:`edgeloop.serving.predict` reads them (a distribution as is,
logits through a softmax); a model whose first output has one value per row has no confidence,
so only ``drift`` and ``random`` apply to it.

Two bounds hold per served version, over the life of the serving process: ``max_bytes`` of
captured records (a record's size is its JSON encoding) and, with ``per_class``, at most that
many rows per *predicted* class (the true class is not known when a row is served). A row over
either bound is not kept and is counted (``over_bytes`` / ``over_quota``). A cap of zero
bytes would keep nothing: it is refused, and capture is turned off by giving no policy.

This module is the pure part (parsing, the decision, the budget); :mod:`capture_sink` holds
the per-version state, the records and where they go.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from edgeloop.core.errors import ConfigError
from edgeloop.monitoring.outputs import QUANT_STEP, SUM_TOLERANCE

Array = np.ndarray[Any, Any]

DEFAULT_MAX_BYTES = 16 << 20  # 16 MiB: ~50k digits rows; a quarter of the agent's 64 MB outbox
MAX_RECORD_BYTES = 256 << 10  # a larger row (an image batch) is counted ``too_large``, not kept
_HINT = (
    "write reasons separated by commas, e.g. --capture uncertain:0.6,margin:0.1,drift:300,"
    "random:0.01"
)


class Reason(StrEnum):
    """Why a row was kept (a record lists every reason that held)."""

    UNCERTAIN = "uncertain"
    MARGIN = "margin"
    DRIFT = "drift"
    RANDOM = "random"


# Why these defaults: 0.6 top-1 is below what a well-calibrated 10-class model gives on rows
# it gets right (digits CNN: >0.9 for most); a 0.1 margin is a near tie; 300 s spans the window
# a drift detector needs to fire and a few windows after; 1 % random keeps an unbiased slice.
DEFAULTS: Mapping[Reason, float] = {
    Reason.UNCERTAIN: 0.6,
    Reason.MARGIN: 0.1,
    Reason.DRIFT: 300.0,
    Reason.RANDOM: 0.01,
}


def _number(reason: Reason, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if reason is Reason.DRIFT:
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(
                f"capture reason drift:{text}: the window {text!r} is not a number of seconds > 0",
                hint="e.g. drift:300 keeps rows answered up to 300 s after a drift alarm",
            )
        return value
    if not 0.0 < value <= 1.0:  # also NaN
        raise ConfigError(
            f"capture reason {reason.value}:{text}: {text!r} is outside (0, 1]; "
            f"{reason.value} takes a probability",
            hint=f"e.g. {reason.value}:{DEFAULTS[reason]:g}",
        )
    return value


def parse_reasons(text: str) -> dict[Reason, float]:
    """``uncertain:0.6,drift,random:0.01`` -> each reason and its value (defaults filled in).

    Raises:
        ConfigError: empty text, an unknown or repeated keyword, a value out of range (each
            named).
    """
    found: dict[Reason, float] = {}
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or not all(parts):
        raise ConfigError(f"capture policy {text!r} has an empty reason", hint=_HINT)
    for part in parts:
        keyword, sep, value = part.partition(":")
        try:
            reason = Reason(keyword.strip().lower())
        except ValueError:
            known = ", ".join(r.value for r in Reason)
            raise ConfigError(
                f"unknown capture reason {keyword.strip()!r} in {text!r}; known: {known}",
                hint=_HINT,
            ) from None
        if reason in found:
            raise ConfigError(f"capture reason {reason.value!r} is given twice in {text!r}")
        found[reason] = _number(reason, value.strip()) if sep else DEFAULTS[reason]
    return found


@dataclass(frozen=True, slots=True)
class CaptureSpec:
    """A model's capture policy: reasons with their thresholds, and the bounds (module doc)."""

    reasons: Mapping[Reason, float]
    max_bytes: int = DEFAULT_MAX_BYTES
    per_class: int | None = None
    seed: int = 0
    _text: str = field(default="", repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.reasons:
            raise ConfigError("a capture policy needs at least one reason", hint=_HINT)
        for reason, value in self.reasons.items():
            _number(Reason(reason), repr(value))
        if isinstance(self.max_bytes, bool) or not isinstance(self.max_bytes, int):
            raise ConfigError(f"capture max_bytes {self.max_bytes!r} is not an integer")
        if self.max_bytes == 0:
            raise ConfigError(
                "capture max_bytes 0 would keep nothing: a byte cap of zero is not a way to "
                "turn capture off",
                hint="to turn capture off, leave out --capture (or the deployment's "
                "serving.capture); otherwise give a cap > 0, e.g. --capture-max-bytes 16777216",
            )
        if self.max_bytes < 0:
            raise ConfigError(f"capture max_bytes {self.max_bytes} is negative; expected > 0")
        if self.per_class is not None and (
            isinstance(self.per_class, bool)
            or not isinstance(self.per_class, int)
            or self.per_class < 1
        ):
            raise ConfigError(
                f"capture per_class {self.per_class!r} is not valid; expected an integer >= 1 "
                "(rows kept per predicted class) or none for no quota"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"capture seed {self.seed!r} is not an integer")

    @classmethod
    def parse(
        cls,
        text: str,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        per_class: int | None = None,
        seed: int = 0,
    ) -> CaptureSpec:
        """The policy ``text`` names (``edgeloop serve --capture``). Raises ConfigError."""
        return cls(parse_reasons(text), max_bytes, per_class, seed)

    @classmethod
    def from_json(cls, doc: Any) -> CaptureSpec:
        """A deployment's ``serving.capture``: the policy text, or
        ``{"policy": TEXT, "max_bytes": N, "per_class": N, "seed": N}``. Raises ConfigError."""
        if isinstance(doc, str):
            return cls.parse(doc)
        if not isinstance(doc, Mapping) or not isinstance(doc.get("policy"), str):
            raise ConfigError(
                f"serving.capture {str(doc)[:80]!r} is not valid; expected the policy text or "
                '{"policy": "uncertain:0.6,drift", "max_bytes": N, "per_class": N, "seed": N}'
            )
        extra = sorted(set(doc) - {"policy", "max_bytes", "per_class", "seed"})
        if extra:
            raise ConfigError(
                f"serving.capture has unknown key(s) {extra}; "
                "known: policy, max_bytes, per_class, seed"
            )
        return cls.parse(
            doc["policy"],
            max_bytes=doc.get("max_bytes", DEFAULT_MAX_BYTES),
            per_class=doc.get("per_class"),
            seed=doc.get("seed", 0),
        )

    @property
    def policy(self) -> str:
        """The reasons as text (``uncertain:0.6,drift:300``)."""
        return ",".join(f"{r.value}:{v:g}" for r, v in self.reasons.items())

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "max_bytes": self.max_bytes,
            "per_class": self.per_class,
            "seed": self.seed,
        }


@dataclass(frozen=True, slots=True)
class Scores:
    """One row's predicted class, top-1 probability and top-1 minus top-2 (None: no classes)."""

    predicted: int | None
    confidence: float | None
    margin: float | None


NO_SCORES = Scores(None, None, None)


def score_arrays(probs: np.ndarray[Any, Any]) -> tuple[Array, Array, Array]:
    """(predicted, confidence, margin) of each row of class probabilities, as arrays: a row
    with NaN/inf, or rows of fewer than two classes, get -1 and NaN, NaN."""
    n = probs.shape[0] if probs.ndim else 1
    if probs.ndim != 2 or probs.shape[1] < 2:
        return np.full(n, -1), np.full(n, np.nan), np.full(n, np.nan)
    top = np.partition(probs, -2, axis=1)[:, -2:]
    finite = np.isfinite(probs).all(axis=1)
    predicted = np.where(finite, probs.argmax(axis=1), -1)
    confidence = np.where(finite, top[:, 1], np.nan)
    margin = np.where(finite, top[:, 1] - top[:, 0], np.nan)
    return predicted, confidence, margin


def scores(probs: np.ndarray[Any, Any]) -> list[Scores]:
    """Each row's :class:`Scores` from rows of class probabilities (a row with NaN/inf:
    :data:`NO_SCORES`)."""
    predicted, confidence, margin = score_arrays(probs)
    return [
        Scores(p, c, m) if p >= 0 else NO_SCORES
        for p, c, m in zip(predicted.tolist(), confidence.tolist(), margin.tolist(), strict=True)
    ]


def row_scores(values: list[float]) -> Scores:
    """One row's :class:`Scores` from its raw output values, read as
    :func:`edgeloop.monitoring.outputs.distributions` reads them (a distribution, normalised;
    anything else through a softmax), in plain Python: for one short row (a ``/predict``
    answer) this is ~20x cheaper than the array path. Only the two largest values matter:
    a softmax's top-1 is ``1 / sum(exp(v - max))`` and its top-2 ``exp(v2 - max)`` times that.
    """
    k = len(values)
    total = sum(values)
    if k < 2 or not math.isfinite(total):  # a NaN or inf value makes the sum NaN or inf
        return NO_SCORES
    ordered = sorted(values)
    low, second, top = ordered[0], ordered[-2], ordered[-1]
    best = values.index(top)
    tolerance = max(SUM_TOLERANCE, 0.5 * QUANT_STEP * k)
    if low >= 0 and top <= 1 and total > 0 and abs(total - 1) <= tolerance:
        return Scores(best, top / total, (top - second) / total)
    norm = sum(math.exp(v - top) for v in values)
    return Scores(best, 1 / norm, (1 - math.exp(second - top)) / norm)


def decide(
    spec: CaptureSpec, row: Scores, drift_age_s: float | None, draw: float
) -> tuple[Reason, ...]:
    """The reasons that hold for one row (empty: not kept). ``drift_age_s``: seconds since the
    version's last drift alarm (None: none yet); ``draw``: the row's uniform draw in [0, 1)."""
    held = []
    for reason, value in spec.reasons.items():
        if reason is Reason.UNCERTAIN:
            hit = row.confidence is not None and row.confidence < value
        elif reason is Reason.MARGIN:
            hit = row.margin is not None and row.margin < value
        elif reason is Reason.DRIFT:
            hit = drift_age_s is not None and 0.0 <= drift_age_s <= value
        else:
            hit = draw < value
        if hit:
            held.append(reason)
    return tuple(held)


class Budget:
    """One served version's bounds and counts: bytes kept, rows per predicted class."""

    def __init__(self, spec: CaptureSpec, model: str, version: str) -> None:
        self.spec = spec
        self.rng = random.Random(f"{spec.seed}:{model}:{version}")
        self.bytes = 0
        self.per_class: Counter[int] = Counter()
        self.counts: Counter[str] = Counter()  # seen, kept, over_bytes, over_quota, too_large
        self.kept_by_reason: Counter[str] = Counter()

    def admit(self, predicted: int | None, size: int) -> bool:
        """Whether a record of ``size`` bytes for a row predicted ``predicted`` fits; counts
        the outcome either way."""
        quota = self.spec.per_class
        if size > MAX_RECORD_BYTES:
            self.counts["too_large"] += 1
            return False
        if quota is not None and predicted is not None and self.per_class[predicted] >= quota:
            self.counts["over_quota"] += 1
            return False
        if self.bytes + size > self.spec.max_bytes:
            self.counts["over_bytes"] += 1
            return False
        self.bytes += size
        if predicted is not None:
            self.per_class[predicted] += 1
        self.counts["kept"] += 1
        return True

    def precheck(self, predicted: int | None) -> bool:
        """Whether a row predicted ``predicted`` may still be kept (its record is built only
        then); a row refused here is counted like one :meth:`admit` refuses."""
        quota = self.spec.per_class
        if quota is not None and predicted is not None and self.per_class[predicted] >= quota:
            self.counts["over_quota"] += 1
            return False
        if self.bytes >= self.spec.max_bytes:
            self.counts["over_bytes"] += 1
            return False
        return True

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.spec.to_dict(),
            "bytes": self.bytes,
            "seen": self.counts["seen"],
            "kept": self.counts["kept"],
            "kept_by_reason": dict(self.kept_by_reason),
            "over_bytes": self.counts["over_bytes"],
            "over_quota": self.counts["over_quota"],
            "too_large": self.counts["too_large"],
            "kept_per_class": {str(k): v for k, v in sorted(self.per_class.items())},
        }
