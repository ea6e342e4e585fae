"""The bench stage: time an ONNX model with ONNX Runtime and measure its accuracy on a split.

Each batch size is measured in a fresh process (``isolate=True``) so the peak RSS reported is that
of the process that ran the model, not of the process that trained it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeloop.core.types import Measurement
from edgeloop.data.dataset import Dataset


@dataclass(frozen=True, slots=True)
class Benched:
    """One measurement per batch size, in the order asked."""

    measurements: tuple[Measurement, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"bench": [m.to_dict() for m in self.measurements]}


def bench(
    onnx: Path, test: Dataset, split_name: str, *, batch_sizes: Sequence[int], runs: int
) -> Benched:
    """Latency, throughput, peak RSS, size and accuracy on ``test`` at each batch size.

    Raises:
        EdgeError: from :func:`edgeloop.bench.measure.benchmark` (a model it cannot load or run).
    """
    from edgeloop.bench.measure import benchmark

    return Benched(
        tuple(
            benchmark(onnx, batch_size=b, runs=runs, data=test, split_name=split_name, isolate=True)
            for b in batch_sizes
        )
    )
