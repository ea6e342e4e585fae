"""One drift score followed sample by sample: the request-path half of the statistic.

``CalibratedStatistic`` is what a profile stores per signal (the fitted statistic and its two
thresholds); ``StreamingScore`` holds the few preallocated vectors that change per sample, so
``step`` is a fixed handful of numpy calls of ``O(k * p)`` work, no Python loop over features.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edgeloop.core.errors import DataError
from edgeloop.monitoring.alarm import FeatureContribution, ScorePart
from edgeloop.monitoring.statistic import F64, ChiSquareModel

# After an alarm, both scores must fall below this share of their thresholds before the next
# one: a score hovering at its line would otherwise alarm on every wobble.
REARM = 0.5


@dataclass(frozen=True, slots=True, eq=False)
class CalibratedStatistic:
    """A fitted statistic with its calibrated location and energy thresholds."""

    model: ChiSquareModel
    location_threshold: float
    energy_threshold: float
    # Set when the residual part is watched (MonitorConfig.residual; residual.py).
    residual_threshold: float | None = None

    def __post_init__(self) -> None:
        for name in ("location_threshold", "energy_threshold", "residual_threshold"):
            value = getattr(self, name)
            if value is None and name == "residual_threshold":
                continue
            if not (math.isfinite(value) and value > 0):
                raise DataError(f"{name}={value}, expected a positive finite threshold")

    @property
    def thresholds(self) -> tuple[float, ...]:
        """The threshold of each watched part, in ``ScorePart`` order."""
        base = (self.location_threshold, self.energy_threshold)
        return base if self.residual_threshold is None else (*base, self.residual_threshold)


@dataclass(frozen=True, slots=True)
class Crossing:
    """A score that went above its threshold at this step (it was below the step before)."""

    part: ScorePart
    score: float
    threshold: float


class StreamingScore:
    """The EWMA state of one calibrated statistic."""

    def __init__(self, stat: CalibratedStatistic) -> None:
        self.stat = stat
        m = stat.model
        self._keep = 1.0 - m.lam
        self._norm = 1.0 / m.denominator
        self._loc = np.zeros(m.components)
        self._energy = np.zeros(2)
        # Per-feature EWMA of the standardised values: only read to name the evidence.
        self._feature = np.zeros(len(m.active))
        self._residual = np.zeros(len(m.active) if stat.residual_threshold else 0)
        self._thresholds = np.array(stat.thresholds)
        self._scores = np.zeros(len(self._thresholds))
        self._above = False

    def reset(self) -> None:
        self._loc[:] = 0.0
        self._energy[:] = 0.0
        self._feature[:] = 0.0
        self._residual[:] = 0.0
        self._scores[:] = 0.0
        self._above = False

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays this score reads or writes per sample (fitted and mutable)."""
        m = self.stat.model
        fitted = (m.active, m.mean, m.scale, m.basis, m.spread, m.energy_mean, m.energy_std)
        mutable = (self._loc, self._energy, self._feature, self._residual, self._scores)
        return sum(a.nbytes for a in (*fitted, *mutable))

    @property
    def scores(self) -> tuple[float, ...]:
        """The current score of each watched part, in ``ScorePart`` order."""
        return tuple(float(v) for v in self._scores)

    def step(self, row: F64) -> Crossing | None:
        """Take one feature row ``(d,)``; the crossing if a score has just gone above its line."""
        m = self.stat.model
        u = (row[m.active] - m.mean) / m.scale
        c = u @ m.basis
        z = np.clip(c / m.spread, -m.clip, m.clip)
        t2 = float(z @ z)
        spe = max(float(u @ u) - float(c @ c), 0.0) if m.residual else m.energy_mean[1]
        e = (np.array((t2, spe)) - m.energy_mean) / m.energy_std
        np.clip(e, -m.clip, m.clip, out=e)
        lam = m.lam
        self._loc *= self._keep
        self._loc += lam * z
        self._energy *= self._keep
        self._energy += lam * e
        self._feature *= self._keep
        self._feature += lam * u
        self._scores[0] = float(self._loc @ self._loc) * self._norm
        self._scores[1] = float(self._energy @ self._energy) * self._norm
        if self._residual.size:
            r = np.clip(u - m.basis @ c, -m.clip, m.clip)
            self._residual *= self._keep
            self._residual += lam * r
            self._scores[2] = float(self._residual @ self._residual) * self._norm
        ratios = self._scores / self._thresholds
        worst = int(ratios.argmax())
        above = bool(ratios[worst] > 1.0)
        rising = above and not self._above
        if rising:
            self._above = True
        elif ratios[worst] < REARM:
            self._above = False
        if not rising:
            return None
        part = tuple(ScorePart)[worst]
        return Crossing(part, float(self._scores[worst]), float(self._thresholds[worst]))

    def top_features(self, count: int) -> tuple[FeatureContribution, ...]:
        """The ``count`` features whose smoothed standardised mean moved most, largest first."""
        if count == 0:
            return ()
        order = np.argsort(-np.abs(self._feature), kind="stable")[:count]
        active = self.stat.model.active
        return tuple(FeatureContribution(int(active[i]), float(self._feature[i])) for i in order)
