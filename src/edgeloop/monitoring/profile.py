"""The reference profile: everything a node needs to monitor a model, without its training data.

Made once at registration from the reference inputs (and, when given, the model's outputs on
them and the true labels). Its size is bounded: ``O(values)`` for the per-value ranges of the
quality check (and the hash map of samples wider than 64 values), ``O(64^2)`` for the statistic;
the measured size for each bundled set is in docs/monitoring.md. It travels as bytes
(``profile_codec.py``: an ``.npz`` of plain arrays and a JSON header, never pickle).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edgeloop.core.errors import ConfigError, DataError
from edgeloop.monitoring.config import MonitorConfig
from edgeloop.monitoring.detector import CalibratedStatistic
from edgeloop.monitoring.features import FeatureMap
from edgeloop.monitoring.performance import atc_threshold
from edgeloop.monitoring.registry import DEFAULT_DETECTOR, get_detector
from edgeloop.monitoring.statistic import F64

PROFILE_VERSION = 1
# Levels of the per-feature quantile sketch (also the confidence sketch).
QUANTILES = (0.0, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0)


@dataclass(frozen=True, slots=True, eq=False)
class OutputProfile:
    """The model's outputs on the reference: class priors, confidences and their statistics.

    ``atc_threshold`` and ``reference_accuracy`` are ``None`` when no labels were given;
    ``source`` names the rows they were computed on (``"val"`` at registration), when known.
    """

    class_priors: F64
    confidence_quantiles: F64
    prediction: CalibratedStatistic
    confidence: CalibratedStatistic
    atc_threshold: float | None
    reference_accuracy: float | None
    source: str | None = None

    def __post_init__(self) -> None:
        k = self.class_priors.shape
        if len(k) != 1 or k[0] < 2 or not math.isclose(float(self.class_priors.sum()), 1.0):
            raise DataError(f"class priors of shape {k} must be >= 2 shares summing to 1")
        if self.confidence_quantiles.shape != (len(QUANTILES),):
            raise DataError(f"confidence sketch of shape {self.confidence_quantiles.shape}")
        if (self.atc_threshold is None) != (self.reference_accuracy is None):
            raise DataError("ATC threshold and reference accuracy come together (from labels)")

    @property
    def num_classes(self) -> int:
        return int(self.class_priors.shape[0])


@dataclass(frozen=True, slots=True, eq=False)
class ReferenceProfile:
    """A compact summary of a reference set (see the module doc).

    ``low``/``high`` are the reference range of each flattened input value; ``sketch`` holds
    the :data:`QUANTILES` of each monitored feature; ``n`` is the reference size the thresholds
    were calibrated for; ``source`` names the rows the input part was computed on (``"train"``
    at registration), when known.
    """

    detector: str
    config: MonitorConfig
    n: int
    features: FeatureMap
    low: npt.NDArray[np.float32]
    high: npt.NDArray[np.float32]
    sketch: F64
    input: CalibratedStatistic
    outputs: OutputProfile | None = None
    version: int = PROFILE_VERSION
    source: str | None = None

    def __post_init__(self) -> None:
        if self.version != PROFILE_VERSION:
            raise DataError(
                f"reference profile format version {self.version}; this edgeloop reads "
                f"version {PROFILE_VERSION}",
                hint="rebuild the profile with this edgeloop version",
            )
        values = self.features.values
        if self.low.shape != (values,) or self.high.shape != (values,):
            raise DataError(f"value ranges of shape {self.low.shape}, expected ({values},)")
        if self.sketch.shape != (self.features.width, len(QUANTILES)):
            raise DataError(f"quantile sketch of shape {self.sketch.shape}")
        if self.n < 2:
            raise DataError(f"reference size {self.n}, expected at least 2")

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return self.features.sample_shape

    def to_bytes(self) -> bytes:
        from edgeloop.monitoring.profile_codec import encode

        return encode(self)

    @classmethod
    def from_bytes(cls, data: bytes) -> ReferenceProfile:
        """Read a profile written by :meth:`to_bytes`.

        Raises:
            DataError: the bytes are not a profile, of another version, or inconsistent.
        """
        from edgeloop.monitoring.profile_codec import decode

        return decode(data)

    @property
    def size_bytes(self) -> int:
        return len(self.to_bytes())


def build_profile(
    reference_x: npt.ArrayLike,
    outputs: npt.ArrayLike | None = None,
    labels: npt.ArrayLike | None = None,
    *,
    config: MonitorConfig | None = None,
    detector: str = DEFAULT_DETECTOR,
) -> ReferenceProfile:
    """Profile a reference ``(n, *sample_shape)``, with outputs ``(n, classes)`` / labels ``(n,)``.

    Raises:
        DataError: NaN/inf values, fewer than two rows, every feature constant, outputs that
            are not probabilities, labels outside the model's classes.
        ConfigError: labels without outputs; an invalid setting.
        NotFoundError: an unknown detector name.
    """
    config = config or MonitorConfig()
    spec = get_detector(detector)
    x = as_reference(reference_x)
    flat = x.reshape(x.shape[0], -1)
    features = FeatureMap.fit(x, seed=config.seed)
    rows = features.rows(flat)
    stat = spec.fit(rows, config)
    out = None
    if outputs is not None:
        out = _output_profile(outputs, labels, x.shape[0], config, spec.fit)
    elif labels is not None:
        raise ConfigError(
            "labels were given without the model's outputs",
            hint="pass outputs= (the model's probabilities on the reference) with labels=",
        )
    return ReferenceProfile(
        detector=spec.name,
        config=config,
        n=x.shape[0],
        features=features,
        low=_float32_bound(flat.min(axis=0), -np.inf),
        high=_float32_bound(flat.max(axis=0), np.inf),
        sketch=np.quantile(rows, QUANTILES, axis=0).T.copy(),
        input=stat,
        outputs=out,
    )


def build_output_profile(
    outputs: npt.ArrayLike,
    labels: npt.ArrayLike | None = None,
    *,
    config: MonitorConfig | None = None,
    detector: str = DEFAULT_DETECTOR,
) -> OutputProfile:
    """The output part of a profile from the model's probabilities ``(m, classes)`` on rows of
    its own (held-out rows, which need not be the input reference), with labels ``(m,)``.

    Raises:
        DataError: outputs that are not probabilities, a single predicted class, constant
            confidence, labels outside the model's classes.
        NotFoundError: an unknown detector name.
    """
    config = config or MonitorConfig()
    return _output_profile(outputs, labels, None, config, get_detector(detector).fit)


def _float32_bound(values: F64, outward: float) -> npt.NDArray[np.float32]:
    """``values`` in float32 (ranges ship to every node), rounded away from the range's inside
    so a reference value is never counted out of its own range."""
    rounded = values.astype(np.float32)
    inside = rounded > values if outward < 0 else rounded < values
    return np.where(inside, np.nextafter(rounded, np.float32(outward)), rounded)


def as_reference(reference_x: npt.ArrayLike) -> F64:
    """The reference as float64 ``(n, *sample_shape)``, or a ``DataError`` saying what is wrong."""
    try:
        x = np.asarray(reference_x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"the reference is not a numeric array ({exc})") from exc
    if x.ndim < 2:
        raise DataError(
            f"the reference has shape {x.shape}; expected (n, *sample_shape) with n >= 2",
            hint="stack the reference samples along a first axis",
        )
    if x.shape[0] < 2:
        raise DataError(
            f"the reference has {x.shape[0]} row(s); at least 2 are needed to estimate spread",
            hint="profile a reference of many samples (hundreds if you have them)",
        )
    bad = ~np.isfinite(x)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise DataError(
            f"the reference holds {int(bad.sum())} NaN/inf value(s), the first at index {first}",
            hint="clean the reference (edgeloop data clean) before profiling it",
        )
    return x


def _output_profile(
    outputs: npt.ArrayLike,
    labels: npt.ArrayLike | None,
    n: int | None,
    config: MonitorConfig,
    fit: Callable[[F64, MonitorConfig], CalibratedStatistic],
) -> OutputProfile:
    from edgeloop.monitoring.outputs import as_labels, as_probabilities, output_rows

    probs = as_probabilities(outputs, rows=n)
    n, k = probs.shape
    predicted = probs.argmax(axis=1)
    confidence = probs.max(axis=1)
    onehot, conf_rows = output_rows(probs)
    if np.unique(predicted).size < 2:
        raise DataError(
            f"the model predicts class {int(predicted[0])} for every reference sample",
            hint="profile outputs on a reference that shows more than one predicted class",
        )
    if np.ptp(confidence) == 0:
        raise DataError("the model's confidence is the same for every reference sample")
    atc = accuracy = None
    if labels is not None:
        y = as_labels(labels, rows=n, classes=k)
        correct = predicted == y
        accuracy = float(correct.mean())
        atc = atc_threshold(confidence, correct)
    return OutputProfile(
        class_priors=np.bincount(predicted, minlength=k) / n,
        confidence_quantiles=np.quantile(confidence, QUANTILES),
        prediction=fit(onehot, config),
        confidence=fit(conf_rows, config),
        atc_threshold=atc,
        reference_accuracy=accuracy,
    )
