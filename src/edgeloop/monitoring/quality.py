"""Data-quality counters: what is wrong with the served samples, per input value.

Counted, never raised: a NaN from a broken sensor is a fact to report, not a reason to fail
the request. A sample with any NaN/inf value is counted and kept out of the drift statistic
(one bad value would otherwise poison the EWMA for hundreds of samples). Values outside the
reference's range are counted per flattened input position; on a small reference many
harmless values fall outside its range, so these are counts to watch, not alarms. Samples of
the wrong shape are counted by the monitor before it refuses them. Memory: three counters per
input value, fixed at fit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edgeloop.core.errors import DataError
from edgeloop.monitoring.statistic import F64


@dataclass(frozen=True, slots=True)
class QualityReport:
    """Counts since the last reset; the tuples have one entry per flattened input value."""

    samples: int
    wrong_shape: int
    nonfinite_samples: int
    nonfinite: tuple[int, ...]
    below_range: tuple[int, ...]
    above_range: tuple[int, ...]

    def __post_init__(self) -> None:
        if min(self.samples, self.wrong_shape, self.nonfinite_samples) < 0:
            raise DataError("quality counts cannot be negative")
        if not len(self.nonfinite) == len(self.below_range) == len(self.above_range):
            raise DataError("quality counters must have one entry per input value")

    @property
    def out_of_range(self) -> int:
        """Values seen outside the reference range, all positions together."""
        return sum(self.below_range) + sum(self.above_range)


class QualityCounter:
    """Per-value counters against the reference range ``[low, high]``."""

    def __init__(self, low: npt.NDArray[np.float32], high: npt.NDArray[np.float32]) -> None:
        self.low = low
        self.high = high
        self._nonfinite = np.zeros(low.size, dtype=np.int64)
        self._below = np.zeros(low.size, dtype=np.int64)
        self._above = np.zeros(low.size, dtype=np.int64)
        self.samples = 0
        self.wrong_shape = 0
        self.nonfinite_samples = 0

    def check(self, flat: F64) -> bool:
        """Count one flattened sample; ``True`` when every value is finite."""
        self.samples += 1
        finite = np.isfinite(flat)
        ok = bool(finite.all())
        if not ok:
            self.nonfinite_samples += 1
            self._nonfinite += ~finite
        # NaN compares False both ways, so it is never counted out of range too.
        self._below += flat < self.low
        self._above += flat > self.high
        return ok

    def count_wrong_shape(self) -> None:
        self.wrong_shape += 1

    def reset(self) -> None:
        for counter in (self._nonfinite, self._below, self._above):
            counter[:] = 0
        self.samples = self.wrong_shape = self.nonfinite_samples = 0

    @property
    def nbytes(self) -> int:
        arrays = (self.low, self.high, self._nonfinite, self._below, self._above)
        return sum(a.nbytes for a in arrays)

    def report(self) -> QualityReport:
        return QualityReport(
            samples=self.samples,
            wrong_shape=self.wrong_shape,
            nonfinite_samples=self.nonfinite_samples,
            nonfinite=tuple(int(v) for v in self._nonfinite),
            below_range=tuple(int(v) for v in self._below),
            above_range=tuple(int(v) for v in self._above),
        )
