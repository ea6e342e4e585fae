"""What one batch is made of: per-request results, counters, and the pure steps of batching
(counting a request's samples, checking requests can share a batch, splitting outputs back).

The scheduling around them lives in :mod:`edgeloop.runtime.batcher`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeloop.core.errors import DataError
from edgeloop.runtime.engine import Feeds, Outputs

Runner = Callable[[Feeds], Outputs]
Signature = tuple[tuple[str, str, tuple[int, ...]], ...]


@dataclass(frozen=True, slots=True)
class BatchResult:
    """One request's outputs and where its time went.

    ``queue_ms``: from ``submit`` to the start of the run that answered it; ``inference_ms``:
    that run; ``batch_size``: samples in that run (its own when it was retried alone).
    """

    outputs: Outputs
    queue_ms: float
    inference_ms: float
    batch_size: int


@dataclass(frozen=True, slots=True)
class BatcherStats:
    """Counters for metrics. ``batch_sizes`` maps samples per run to the number of such runs."""

    requests: int
    samples: int
    batches: int
    rejected: int
    failed: int
    retried_batches: int
    queue_depth: int
    in_flight: int
    batch_sizes: Mapping[int, int]

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "samples": self.samples,
            "batches": self.batches,
            "rejected": self.rejected,
            "failed": self.failed,
            "retried_batches": self.retried_batches,
            "queue_depth": self.queue_depth,
            "in_flight": self.in_flight,
            "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
        }


def sample_count(feeds: Feeds) -> int:
    """Samples in one request: the leading axis every input shares.

    Raises:
        DataError: no inputs, a non-array or scalar input, or inputs that disagree.
    """
    if not feeds:
        raise DataError("the request has no input tensors", hint="send one tensor per input")
    rows: int | None = None
    for name, value in feeds.items():
        if not isinstance(value, np.ndarray) or value.ndim == 0:
            raise DataError(
                f"input {name!r} is not an array with a leading sample axis "
                f"(got {type(value).__name__} of shape {getattr(value, 'shape', None)})",
                hint="send inputs shaped (samples, ...)",
            )
        if rows is None:
            rows = int(value.shape[0])
        elif value.shape[0] != rows:
            raise DataError(
                f"input {name!r} has {value.shape[0]} samples on axis 0, "
                f"but the first input has {rows}; every input needs the same count"
            )
    if not rows:
        raise DataError("the request holds 0 samples on axis 0; expected at least 1")
    return rows


def signature(feeds: Feeds) -> Signature:
    """What requests must share to be concatenated: input names, dtypes, trailing shapes."""
    return tuple(sorted((n, v.dtype.str, v.shape[1:]) for n, v in feeds.items()))


def split(outputs: Outputs, sizes: list[int]) -> list[Outputs]:
    """Cut batch outputs back into per-request views along axis 0.

    Raises:
        DataError: an output does not carry the batch on axis 0 (it cannot be split).
    """
    total = sum(sizes)
    for name, value in outputs.items():
        if value.ndim == 0 or value.shape[0] != total:
            raise DataError(
                f"output {name!r} has shape {value.shape}; a batch of {total} needs {total} "
                "rows on axis 0"
            )
    bounds = np.cumsum([0, *sizes])
    return [
        {name: value[bounds[i] : bounds[i + 1]] for name, value in outputs.items()}
        for i in range(len(sizes))
    ]


def concatenate(batch: list[Feeds], sig: Signature) -> dict[str, np.ndarray]:
    """One feed per input: the requests' arrays joined along axis 0 (the only copy made)."""
    return {name: np.concatenate([feeds[name] for feeds in batch]) for name, _, _ in sig}
