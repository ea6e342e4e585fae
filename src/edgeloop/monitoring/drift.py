"""``DriftMonitor``: the public, server-free face of streaming monitoring.

::

    from edgeloop.monitoring import DriftMonitor
    mon = DriftMonitor.fit(reference_x)     # array (n, *sample_shape); optional outputs= / labels=
    alarm = mon.update(x)                   # one sample -> DriftAlarm | None
    alarms = mon.update_many(xs)            # in order -> list of (index_in_xs, DriftAlarm)
    mon.state_bytes                         # bytes of state it holds
    mon.reset()                             # start afresh (new model, alarm acknowledged)

One ``update`` per served sample is a fixed handful of numpy calls (no loop over features).
An alarm is returned once, when a score crosses its threshold; it is not repeated while the
score stays above, nor until it has fallen below half its threshold (call ``reset`` after
acting on it, or read ``scores``).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from edgeloop.core.errors import ConfigError, DataError
from edgeloop.monitoring.alarm import AlarmKind, DriftAlarm
from edgeloop.monitoring.config import MonitorConfig
from edgeloop.monitoring.detector import Crossing, StreamingScore
from edgeloop.monitoring.outputs import as_probabilities, output_rows
from edgeloop.monitoring.performance import PerformanceReport, PerformanceTracker
from edgeloop.monitoring.profile import ReferenceProfile, build_profile
from edgeloop.monitoring.quality import QualityCounter, QualityReport
from edgeloop.monitoring.registry import DEFAULT_DETECTOR
from edgeloop.monitoring.statistic import F64


class DriftMonitor:
    """Input, prediction and confidence drift, data quality and performance for one model."""

    def __init__(self, profile: ReferenceProfile) -> None:
        self.profile = profile
        self._input = StreamingScore(profile.input)
        self._quality = QualityCounter(profile.low, profile.high)
        out = profile.outputs
        self._prediction = StreamingScore(out.prediction) if out else None
        self._confidence = StreamingScore(out.confidence) if out else None
        classes = out.num_classes if out else 0
        self._performance = PerformanceTracker(
            classes, profile.config.window, out.atc_threshold if out else None
        )
        self._seen = 0

    @classmethod
    def fit(
        cls,
        reference_x: npt.ArrayLike,
        outputs: npt.ArrayLike | None = None,
        labels: npt.ArrayLike | None = None,
        *,
        config: MonitorConfig | None = None,
        detector: str = DEFAULT_DETECTOR,
    ) -> DriftMonitor:
        """Profile a reference ``(n, *sample_shape)`` and start monitoring against it.

        ``outputs`` are the model's probabilities on the reference ``(n, classes)`` (held-out
        outputs are best: on its training rows a model is over-confident); ``labels`` the true
        classes ``(n,)``, which calibrate the accuracy estimate.

        Raises:
            DataError: NaN/inf values, a single row, every feature constant, outputs that are
                not probabilities, a label of a class the model lacks.
            ConfigError: labels without outputs, an invalid setting.
            NotFoundError: an unknown detector name.
        """
        return cls(build_profile(reference_x, outputs, labels, config=config, detector=detector))

    @classmethod
    def from_profile(cls, profile: ReferenceProfile | bytes) -> DriftMonitor:
        """Monitor against a stored profile (or its bytes, see ``ReferenceProfile.to_bytes``)."""
        if isinstance(profile, bytes):
            profile = ReferenceProfile.from_bytes(profile)
        return cls(profile)

    @property
    def samples_seen(self) -> int:
        return self._seen

    def update(self, x: npt.ArrayLike, output: npt.ArrayLike | None = None) -> DriftAlarm | None:
        """Take one served sample (and the model's probabilities for it, if profiled).

        Returns the alarm when a drift score has just crossed its threshold (the largest
        crossing relative to its threshold when several do), else ``None``. A sample with
        NaN/inf values is counted (``quality``) and not scored.

        Raises:
            DataError: a non-numeric sample; the sample's shape differs from the reference's
                (it is counted too);
                an output that is not a probability vector of the profiled classes.
            ConfigError: an output given to a monitor fitted without outputs.
        """
        sample = _numeric(x)
        features = self.profile.features
        if sample.shape != features.sample_shape:
            self._quality.count_wrong_shape()
            features.check(sample, batch=False)
        probs = self._probabilities(output)
        index = self._seen
        self._seen += 1
        flat = sample.reshape(1, -1)
        if not self._quality.check(flat[0]):
            return None
        crossings: list[tuple[AlarmKind, StreamingScore, Crossing]] = []
        hit = self._input.step(features.rows(flat)[0])
        if hit:
            crossings.append((AlarmKind.INPUT, self._input, hit))
        if probs is not None and self._prediction and self._confidence:
            onehot, conf = output_rows(probs)
            self._performance.add_confidence(float(conf[0, 0]))
            for kind, score, row in (
                (AlarmKind.PREDICTION, self._prediction, onehot[0]),
                (AlarmKind.CONFIDENCE, self._confidence, conf[0]),
            ):
                hit = score.step(row)
                if hit:
                    crossings.append((kind, score, hit))
        if not crossings:
            return None
        kind, score, hit = max(crossings, key=lambda c: c[2].score / c[2].threshold)
        return DriftAlarm(
            kind=kind,
            part=hit.part,
            index=index,
            score=hit.score,
            threshold=hit.threshold,
            top_features=score.top_features(self.profile.config.top_features),
        )

    def update_many(
        self, xs: npt.ArrayLike, outputs: npt.ArrayLike | None = None
    ) -> list[tuple[int, DriftAlarm]]:
        """``update`` each sample of ``xs`` ``(m, *sample_shape)`` in order; the alarms raised.

        Raises:
            DataError: ``xs`` (or ``outputs``) not shaped as a batch of reference samples;
                nothing is counted then.
        """
        batch = _numeric(xs)
        self.profile.features.check(batch, batch=True)
        probs = None
        if outputs is not None:
            probs = as_probabilities(outputs, rows=batch.shape[0])
        alarms = []
        for i in range(batch.shape[0]):
            alarm = self.update(batch[i], None if probs is None else probs[i])
            if alarm is not None:
                alarms.append((i, alarm))
        return alarms

    def record_label(self, predicted: int, label: int) -> None:
        """The true class of a served sample, joined by the caller to what the model answered.

        Raises:
            ConfigError: the monitor was fitted without outputs (it has no class count).
            DataError: a class index the model does not have.
        """
        if self.profile.outputs is None:
            raise ConfigError(
                "labels need a monitor fitted with the model's outputs",
                hint="DriftMonitor.fit(reference_x, outputs=probabilities, labels=labels)",
            )
        self._performance.add_label(predicted, label)

    @property
    def scores(self) -> dict[AlarmKind, tuple[float, ...]]:
        """Current scores of each watched signal, in ``ScorePart`` order (location, energy,
        and residual when configured); the thresholds are in ``profile``."""
        out = {AlarmKind.INPUT: self._input.scores}
        if self._prediction and self._confidence:
            out[AlarmKind.PREDICTION] = self._prediction.scores
            out[AlarmKind.CONFIDENCE] = self._confidence.scores
        return out

    @property
    def quality(self) -> QualityReport:
        return self._quality.report()

    @property
    def performance(self) -> PerformanceReport:
        return self._performance.report()

    @property
    def state_bytes(self) -> int:
        """Bytes of the arrays the monitor reads or writes per sample (fitted and mutable)."""
        scores = [s for s in (self._input, self._prediction, self._confidence) if s]
        features = self.profile.features
        hashed = [a for a in (features.bucket, features.sign, features.centre, features.scale)]
        return (
            sum(s.nbytes for s in scores)
            + self._quality.nbytes
            + self._performance.nbytes
            + sum(a.nbytes for a in hashed if a is not None)
        )

    def reset(self) -> None:
        """Start afresh: scores, counters, windows and the sample index go back to zero."""
        for score in (self._input, self._prediction, self._confidence):
            if score:
                score.reset()
        self._quality.reset()
        self._performance.reset()
        self._seen = 0

    def _probabilities(self, output: npt.ArrayLike | None) -> F64 | None:
        if output is None:
            return None
        out = self.profile.outputs
        if out is None:
            raise ConfigError(
                "an output was given to a monitor fitted without the model's outputs",
                hint="fit with outputs= to watch prediction and confidence drift",
            )
        probs = as_probabilities(np.asarray(output)[np.newaxis], rows=1)
        if probs.shape[1] != out.num_classes:
            raise DataError(
                f"an output of {probs.shape[1]} classes; the profiled model has {out.num_classes}"
            )
        return probs


def _numeric(x: npt.ArrayLike) -> F64:
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"a sample that is not numeric ({exc})") from exc
