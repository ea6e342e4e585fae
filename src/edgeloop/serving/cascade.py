"""The cascade in the server: a small model answers; inputs it is unsure of go up a tier.

``--cascade SMALL=LARGE@THRESHOLD`` sends the rows of a request to served model ``SMALL`` whose
confidence (the largest softmax probability of SMALL's first output, as
:func:`edgeloop.runtime.cascade.confidence` reads it) is below THRESHOLD on to served model
``LARGE``; ``--cascade-url SMALL=URL@THRESHOLD`` sends them to a parent tier's Open Inference
Protocol endpoint instead (:mod:`edgeloop.serving.parent`). When the large model or the parent
fails, SMALL's answer stands and the fallback is counted: an edge node keeps answering offline.

Threshold 0 never escalates; 1 escalates every row (even one the small model is certain of);
a row whose scores hold NaN or an infinity has confidence 0, so any threshold above 0 sends it
up (the small model's answer for it is a numerical failure). Parsing and the row decisions
are pure; :class:`Escalator` does the calls and the counting.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from edgeloop.core.errors import ConfigError, DataError, EdgeError
from edgeloop.core.types import ModelRef, TensorSpec
from edgeloop.runtime.cascade import confidence
from edgeloop.serving.metrics import ServerMetrics
from edgeloop.serving.parent import ParentTier

Outputs = dict[str, np.ndarray[Any, Any]]
RunLarge = Callable[[str, Outputs], Awaitable[Outputs]]
_HINT = "write SMALL=LARGE@THRESHOLD, e.g. --cascade tiny=big@0.8"
_URL_HINT = (
    "write SMALL=http://HOST:PORT/v2/models/NAME@THRESHOLD, "
    "e.g. tiny=http://gw:8000/v2/models/big@0.8"
)


class AnsweredBy(StrEnum):
    """Who answered a cascaded request's escalated rows (``small``: none was escalated)."""

    SMALL = "small"
    LARGE = "large"  # a served model of this server
    PARENT = "parent"  # a parent tier over HTTP
    FALLBACK = "fallback"  # rows were escalated, the tier failed, the small answer stands


@dataclass(frozen=True, slots=True)
class CascadeSpec:
    """Where a small model's unsure rows go: served model ``large`` or parent ``url``."""

    threshold: float
    large: str | None = None
    url: str | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.threshold) and 0.0 <= self.threshold <= 1.0):
            raise ConfigError(
                f"cascade threshold {self.threshold} is outside [0, 1]",
                hint="0 never escalates, 1 always does; e.g. 0.8 escalates rows under 80%",
            )
        if (self.large is None) == (self.url is None):
            raise ConfigError("a cascade needs exactly one of a large model or a parent URL")

    @property
    def tier(self) -> AnsweredBy:
        return AnsweredBy.LARGE if self.large is not None else AnsweredBy.PARENT

    def to_dict(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "large": self.large, "url": self.url}


def parse_cascade(text: str) -> tuple[str, CascadeSpec]:
    """``"tiny=big@0.8"`` -> ``("tiny", CascadeSpec(0.8, large="big"))``.

    Raises:
        ConfigError: no ``=`` or ``@``, a bad model name, a threshold outside [0, 1].
    """
    small, target, threshold = _split(text, "--cascade", _HINT)
    large = _name(target, "--cascade", text)
    if large == small:
        raise ConfigError(f"--cascade {text!r} sends model {small!r} to itself", hint=_HINT)
    return small, CascadeSpec(threshold, large=large)


def parse_cascade_url(text: str) -> tuple[str, CascadeSpec]:
    """``"tiny=http://gw:8000/v2/models/big@0.8"`` -> ``("tiny", CascadeSpec(0.8, url=...))``.

    The URL names the parent's model (optionally ``/versions/V``); ``/infer`` is appended.

    Raises:
        ConfigError: no ``=`` or ``@``, a URL that is not http(s) or names no v2 model, a
            threshold outside [0, 1].
    """
    small, url, threshold = _split(text, "--cascade-url", _URL_HINT)
    parts = urlsplit(url.rstrip("/"))
    segments = parts.path.strip("/").split("/")
    names_model = segments[:2] == ["v2", "models"] and len(segments) in (3, 5)
    if len(segments) == 5:
        names_model = names_model and segments[3] == "versions"
    if parts.scheme not in ("http", "https") or not parts.hostname or not names_model:
        raise ConfigError(
            f"--cascade-url {url!r} is not an http(s) URL of an Open Inference Protocol model "
            "(.../v2/models/NAME[/versions/V])",
            hint=_URL_HINT,
        )
    return small, CascadeSpec(threshold, url=url.rstrip("/") + "/infer")


def _split(text: str, flag: str, hint: str) -> tuple[str, str, float]:
    small, sep, rest = text.partition("=")
    target, at, raw = rest.rpartition("@")
    if not sep or not at or not target.strip():
        raise ConfigError(f"{flag} {text!r} is not SMALL=TARGET@THRESHOLD", hint=hint)
    try:
        threshold = float(raw)
    except ValueError:
        raise ConfigError(
            f"{flag} {text!r}: threshold {raw!r} is not a number in [0, 1]", hint=hint
        ) from None
    if not (math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
        raise ConfigError(f"{flag} {text!r}: threshold {raw} is outside [0, 1]", hint=hint)
    return _name(small, flag, text), target.strip(), threshold


def _name(name: str, flag: str, text: str) -> str:
    try:
        return ModelRef(name.strip()).name
    except ConfigError as exc:
        raise ConfigError(f"{flag} {text!r}: {exc.message}", hint=exc.hint) from exc


def escalated_rows(outputs: Mapping[str, np.ndarray[Any, Any]], threshold: float) -> np.ndarray:
    """Indices of the rows of the first output (class scores) to send up (pure).

    Raises:
        DataError: the first output is not ``(rows, classes)``.
    """
    conf = confidence(np.asarray(next(iter(outputs.values()))))  # NaN/Inf rows: 0
    if threshold >= 1.0:
        return np.arange(conf.shape[0])
    return np.flatnonzero(conf < threshold)


def merge_rows(small: Outputs, large: Mapping[str, Any], idx: np.ndarray) -> Outputs:
    """``small`` with rows ``idx`` of every output replaced by ``large``'s rows (pure).

    Raises:
        DataError: ``large`` lacks an output or its shape or dtype kind does not fit.
    """
    merged: Outputs = {}
    for name, value in small.items():
        if name not in large:
            raise DataError(f"the large tier returned no output {name!r}; it gave {list(large)}")
        rows = np.asarray(large[name])
        expected = (len(idx), *value.shape[1:])
        if rows.shape != expected or rows.dtype.kind != value.dtype.kind:
            raise DataError(
                f"the large tier's output {name!r} is {rows.dtype}{list(rows.shape)}; "
                f"expected {value.dtype}{list(expected)}"
            )
        out = value.copy()
        out[idx] = rows
        merged[name] = out
    return merged


def check_pair(small: str, large: str | None, specs: tuple[tuple[TensorSpec, ...], ...]) -> None:
    """Refuse a cascade whose models cannot share rows: ``specs`` is (small inputs, small
    outputs[, large inputs, large outputs]).

    Raises:
        ConfigError: the small model's first output is not ``(rows, classes)``, or the large
            model takes or gives other tensors than the small one.
    """
    outputs = specs[1]
    if not outputs or len(outputs[0].shape) != 2:
        raise ConfigError(
            f"--cascade model {small!r}: its first output "
            f"{outputs[0].to_dict() if outputs else 'none'} is not (rows, classes) scores",
            hint="a cascade reads the small model's confidence from class scores",
        )
    if large is not None and specs[:2] != specs[2:]:
        raise ConfigError(
            f"--cascade {small}={large}: the models' tensors differ "
            f"({[s.to_dict() for s in specs[0] + specs[1]]} vs "
            f"{[s.to_dict() for s in specs[2] + specs[3]]})",
            hint="the large model must take and give the same tensors as the small one",
        )


@dataclass(frozen=True, slots=True)
class CascadeOutcome:
    """Who answered one request's escalated rows, how many there were, why it fell back."""

    answered_by: AnsweredBy
    rows: int
    escalated: int
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "answered_by": self.answered_by.value,
            "rows": self.rows,
            "escalated_rows": self.escalated,
        }
        if self.reason is not None:
            doc["fallback_reason"] = self.reason
        return doc


class Escalator:
    """The server's cascades: decides, calls the large tier, merges and counts."""

    def __init__(
        self, specs: Mapping[str, CascadeSpec], metrics: ServerMetrics, timeout_s: float
    ) -> None:
        self.specs = dict(specs)
        self.metrics = metrics
        self.parents = {
            small: ParentTier(spec.url, timeout_s)
            for small, spec in specs.items()
            if spec.url is not None
        }

    def replace(
        self, specs: Mapping[str, CascadeSpec], parents: Mapping[str, ParentTier]
    ) -> dict[str, ParentTier]:
        """Swap in new cascades (no await: a request sees the old set or the new one whole).

        Returns the parent tiers no longer used, for the caller to close.
        """
        kept = {id(p) for p in parents.values()}
        dropped = {k: p for k, p in self.parents.items() if id(p) not in kept}
        self.specs, self.parents = dict(specs), dict(parents)
        return dropped

    async def apply(
        self, model: str, outputs: Outputs, feeds: Outputs, run_large: RunLarge
    ) -> tuple[Outputs, CascadeOutcome]:
        """``model``'s outputs with its unsure rows answered by the large tier (or not).

        Raises:
            DataError: the small model's first output is not (rows, classes).
        """
        spec = self.specs[model]
        idx = escalated_rows(outputs, spec.threshold)
        rows = len(next(iter(outputs.values())))
        if idx.size == 0:
            return outputs, CascadeOutcome(AnsweredBy.SMALL, rows, 0)
        tier = spec.tier.value
        self.metrics.escalations.labels(model, tier).inc(idx.size)
        self.metrics.cascade_calls.labels(model, tier).inc()
        subset = {name: value[idx] for name, value in feeds.items()}
        try:
            if spec.large is not None:
                large = await run_large(spec.large, subset)
            else:
                large = await self.parents[model].infer(subset)
            merged = merge_rows(outputs, large, idx)
        except EdgeError as exc:  # the tier's failure is a figure; the small answer stands
            self.metrics.fallbacks.labels(model, tier, type(exc).__name__).inc()
            reason = f"{tier} failed: {exc.message}"
            return outputs, CascadeOutcome(AnsweredBy.FALLBACK, rows, int(idx.size), reason)
        return merged, CascadeOutcome(spec.tier, rows, int(idx.size))

    async def close(self) -> None:
        """Close the parent tiers' connections (at shutdown)."""
        for parent in self.parents.values():
            await parent.close()
