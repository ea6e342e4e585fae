"""Drift detectors by name (STYLE habit 8): a profile records which one made its statistics.

A detector turns reference feature rows ``(n, k)`` and a :class:`MonitorConfig` into a
:class:`CalibratedStatistic`, which ``StreamingScore`` follows on the node.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from edgeloop.core.errors import ConfigError, NotFoundError
from edgeloop.monitoring.calibration import calibrate_thresholds
from edgeloop.monitoring.config import MonitorConfig
from edgeloop.monitoring.detector import CalibratedStatistic
from edgeloop.monitoring.residual import residual_calibration_rows
from edgeloop.monitoring.statistic import F64, calibration_rows, fit_model

DEFAULT_DETECTOR = "ewma-pca"


@dataclass(frozen=True, slots=True)
class DetectorSpec:
    """A named way to fit and calibrate a drift statistic."""

    name: str
    description: str
    fit: Callable[[F64, MonitorConfig], CalibratedStatistic]


_REGISTRY: dict[str, DetectorSpec] = {}


def register_detector(spec: DetectorSpec) -> None:
    """Add a detector; a name can be registered once.

    Raises:
        ConfigError: the name is taken.
    """
    if spec.name in _REGISTRY:
        raise ConfigError(f"a drift detector named {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec


def detector_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def get_detector(name: str) -> DetectorSpec:
    """The detector registered as ``name``.

    Raises:
        NotFoundError: unknown name (the message lists the known ones).
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise NotFoundError(
            f"no drift detector named {name!r}; known: {', '.join(_REGISTRY)}",
            hint=f"use {DEFAULT_DETECTOR!r}, the default",
        ) from None


def _fit_ewma_pca(rows: F64, config: MonitorConfig) -> CalibratedStatistic:
    model = fit_model(
        rows,
        lam=config.lam,
        clip=config.clip,
        rows_per_axis=config.rows_per_axis,
        energy=config.energy,
    )

    def calibrate(parts: list[F64], rate: float, seed: int) -> tuple[float, ...]:
        return calibrate_thresholds(
            parts,
            lam=model.lam,
            denominator=model.denominator,
            alarms_per_1000=rate,
            replicates=config.replicates,
            length=config.calibration_length,
            seed=seed,
        )

    location, energy = calibrate(list(calibration_rows(model, rows)), config.alarms_per_1000,
                                 config.seed)  # fmt: skip
    residual = None
    if model.residual and config.watches_residual(rows.shape[0], len(model.active)):
        # Its own target (MonitorConfig): it does not raise the other parts' thresholds.
        (residual,) = calibrate(
            [residual_calibration_rows(model, rows)], config.residual_alarms_per_1000,
            config.seed + 1,
        )  # fmt: skip
    return CalibratedStatistic(model, location, energy, residual)


register_detector(
    DetectorSpec(
        DEFAULT_DETECTOR,
        "EWMA chi-square on whitened principal scores plus T^2 / residual energies, "
        "thresholds by a bootstrap of the reference (statistic.py, calibration.py)",
        _fit_ewma_pca,
    )
)
