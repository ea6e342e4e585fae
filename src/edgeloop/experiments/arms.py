"""Per-arm sufficient statistics: what a node reports and the control plane sums.

A node never ships raw outcomes for an experiment; it ships, per arm and per metric, the
sufficient statistics of that metric. They merge exactly, so the fleet-wide summary is the sum
of the node summaries in any order:

- Bernoulli metrics (accuracy, error rate, a latency threshold exceeded): successes / trials.
- Continuous metrics (latency, confidence): count, mean and M2 (the sum of squared deviations
  from the mean), Welford (1962); two summaries merge with Chan, Golub & LeVeque's (1979)
  parallel formula, which is exact up to rounding.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edgeloop.core.errors import DataError

# A Bernoulli arm's variance is p(1-p); at p = 0 or 1 that is 0 and the test's variance with
# it. Johari et al. plug in the sample variance; we plug in the Agresti-Coull-like smoothed
# rate (s + 1/2)/(n + 1) so a perfect arm still has a variance (it vanishes as n grows).
_SMOOTHING = 0.5


def bernoulli_variance(successes: npt.ArrayLike, trials: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """p(1-p) at the smoothed rate p = (s + 1/2) / (n + 1); takes arrays (the benchmark's)."""
    s = np.asarray(successes, dtype=np.float64)
    p = (s + _SMOOTHING) / (np.asarray(trials, dtype=np.float64) + 2 * _SMOOTHING)
    return np.asarray(p * (1.0 - p))


@dataclass(frozen=True, slots=True)
class BernoulliSummary:
    """Successes out of trials for one arm (accuracy: correct answers out of labelled ones)."""

    successes: int
    trials: int

    def __post_init__(self) -> None:
        if self.trials < 0 or self.successes < 0:
            raise DataError(
                f"a Bernoulli summary of {self.successes}/{self.trials} has a negative count",
                hint="report counts as they were observed: both are >= 0",
            )
        if self.successes > self.trials:
            raise DataError(
                f"{self.successes} successes out of {self.trials} trials is more than all",
                hint="successes count the trials that succeeded, so successes <= trials",
            )

    @property
    def count(self) -> int:
        return self.trials

    @property
    def mean(self) -> float:
        return self.successes / self.trials if self.trials else math.nan

    @property
    def variance(self) -> float:
        """The plug-in per-observation variance p(1-p), with the smoothed rate (see above)."""
        return float(bernoulli_variance(self.successes, self.trials))

    def merge(self, other: BernoulliSummary) -> BernoulliSummary:
        return BernoulliSummary(self.successes + other.successes, self.trials + other.trials)

    @classmethod
    def from_outcomes(cls, outcomes: npt.ArrayLike) -> BernoulliSummary:
        values = np.asarray(outcomes, dtype=bool).ravel()
        return cls(int(values.sum()), int(values.size))


@dataclass(frozen=True, slots=True)
class ContinuousSummary:
    """Count, mean and M2 of one arm's continuous metric (Welford's running moments)."""

    count: int
    mean: float = 0.0
    m2: float = 0.0

    def __post_init__(self) -> None:
        if self.count < 0:
            raise DataError(
                f"a summary with count {self.count} has a negative count",
                hint="count is the number of observations: >= 0",
            )
        if not (math.isfinite(self.mean) and math.isfinite(self.m2)) or self.m2 < 0:
            raise DataError(
                f"a summary with mean {self.mean} and M2 {self.m2} is invalid",
                hint="mean must be finite and M2 (sum of squared deviations) finite and >= 0",
            )

    @property
    def variance(self) -> float:
        """The unbiased sample variance M2 / (n - 1); NaN below two observations."""
        return self.m2 / (self.count - 1) if self.count > 1 else math.nan

    def merge(self, other: ContinuousSummary) -> ContinuousSummary:
        """Chan, Golub & LeVeque (1979): M2 = M2_a + M2_b + delta^2 n_a n_b / n."""
        n = self.count + other.count
        if n == 0:
            return self
        delta = other.mean - self.mean
        mean = self.mean + delta * other.count / n
        m2 = self.m2 + other.m2 + delta * delta * self.count * other.count / n
        return ContinuousSummary(n, mean, m2)

    @classmethod
    def from_values(cls, values: npt.ArrayLike) -> ContinuousSummary:
        data = np.asarray(values, dtype=np.float64).ravel()
        if not np.all(np.isfinite(data)):
            raise DataError(
                "a continuous metric holds NaN or infinite values",
                hint="drop the requests whose metric could not be measured before summarising",
            )
        if data.size == 0:
            return cls(0)
        mean = float(data.mean())
        return cls(int(data.size), mean, float(((data - mean) ** 2).sum()))


Summary = BernoulliSummary | ContinuousSummary


def merge_all(summaries: Iterable[Summary]) -> Summary:
    """Sum node summaries of one arm and metric into the fleet's; all must be of one kind."""
    items = list(summaries)
    if not items:
        raise DataError("no summaries to merge", hint="pass at least one node's summary")
    total = items[0]
    for item in items[1:]:
        if type(item) is not type(total):
            raise DataError(
                f"cannot merge a {type(item).__name__} into a {type(total).__name__}",
                hint="one metric is summarised the same way on every node",
            )
        total = total.merge(item)  # type: ignore[arg-type]
    return total


def merge_by_class(reports: Iterable[Mapping[str, Summary]]) -> dict[str, Summary]:
    """Sum per-device-class summaries from several nodes, class by class."""
    grouped: dict[str, list[Summary]] = {}
    for report in reports:
        for device_class, summary in report.items():
            grouped.setdefault(device_class, []).append(summary)
    return {name: merge_all(items) for name, items in sorted(grouped.items())}
