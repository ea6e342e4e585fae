"""What the monitor says when a stream no longer looks like its reference."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from edgeloop.core.errors import DataError


class AlarmKind(StrEnum):
    """Which signal drifted."""

    # The inputs (covariate shift, a scale change, a new class mix seen through the inputs).
    INPUT = "input"
    # The model's predicted classes (class-prior shift of the outputs).
    PREDICTION = "prediction"
    # The model's top-class confidence.
    CONFIDENCE = "confidence"


class ScorePart(StrEnum):
    """Which half of the statistic crossed its threshold (statistic.py)."""

    # The average of the whitened features moved (a shifted mean, a new mix).
    LOCATION = "location"
    # Their energy changed: a gain, a noisier sensor, a move off the reference's correlations.
    ENERGY = "energy"
    # The features moved off the reference's principal axes (watched when configured).
    RESIDUAL = "residual"


@dataclass(frozen=True, slots=True)
class FeatureContribution:
    """One feature's share of the evidence: its EWMA mean shift in reference std units."""

    feature: int
    shift_std: float

    def __post_init__(self) -> None:
        if self.feature < 0 or not math.isfinite(self.shift_std):
            raise DataError(f"contribution of feature {self.feature}: {self.shift_std} is invalid")


@dataclass(frozen=True, slots=True)
class DriftAlarm:
    """A drift score crossed its calibrated threshold at one sample.

    ``index`` counts the samples the monitor has seen since its last reset (0-based);
    ``top_features`` are the monitored features (flattened input positions, or hashed buckets
    for inputs of more than 64 values) whose smoothed mean moved most, largest first.
    """

    kind: AlarmKind
    part: ScorePart
    index: int
    score: float
    threshold: float
    top_features: tuple[FeatureContribution, ...]

    def __post_init__(self) -> None:
        if self.index < 0:
            raise DataError(f"alarm sample index {self.index}, expected >= 0")
        if not (math.isfinite(self.score) and math.isfinite(self.threshold)):
            raise DataError(f"alarm score {self.score} / threshold {self.threshold} not finite")
        if self.score <= self.threshold:
            raise DataError(
                f"alarm score {self.score} does not exceed its threshold {self.threshold}"
            )

    @property
    def ratio(self) -> float:
        """Score over threshold (> 1): how far past the line the stream went."""
        return self.score / self.threshold
