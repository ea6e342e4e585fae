"""The monitor's settings, with the measured reasons for the defaults."""

from __future__ import annotations

import math
from dataclasses import dataclass

from edgeloop.core.errors import ConfigError


@dataclass(frozen=True, slots=True)
class MonitorConfig:
    """How a :class:`~edgeloop.monitoring.drift.DriftMonitor` is fitted.

    Defaults were chosen on bench/drift_bench.py's protocol (docs/monitoring.md):

    - ``lam`` 0.03: the EWMA weight; ~1/lam = 33 samples of memory. 0.05 found fewer shifts
      on the small sets at the same false-alarm target, 0.02 slowed the scale-shift alarm.
    - ``clip`` 3: whitened values beyond 3 reference stds count as 3 (digits' rare pixels).
    - ``rows_per_axis`` 5, ``energy`` 0.95: principal axes kept (statistic.py); 3 / 0.99
      found more covariate shifts on BasicMotions but fewer scale shifts on MIT-BIH.
    - ``alarms_per_1000`` 0.05: the calibration target. Measured on the benchmark's no-shift
      streams: 0.00-0.02 false alarms per 1,000 at 0.05, 0.12-0.23 at 0.1, 0.44-0.72 at 0.2
      (the bootstrap's maxima make the realised rate lower than the target on small sets).
    - ``residual`` off: the residual part (residual.py) finds more covariate shifts on small
      references but raised false alarms per 1,000 from 0.02 to 0.10 (digits) and from 0.00
      to 0.16 (BasicMotions).
    - ``window`` 200: samples in the accuracy / estimated-accuracy windows.
    """

    lam: float = 0.03
    clip: float = 3.0
    rows_per_axis: int = 5
    energy: float = 0.95
    alarms_per_1000: float = 0.05
    replicates: int = 64
    calibration_length: int = 4000
    residual: bool = False
    window: int = 200
    top_features: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        checks = [
            ("lam", 0.0 < self.lam < 1.0, "0 < lam < 1"),
            ("clip", math.isfinite(self.clip) and self.clip > 0, "a positive clip"),
            ("rows_per_axis", self.rows_per_axis >= 1, "rows_per_axis >= 1"),
            ("energy", 0.0 < self.energy <= 1.0, "0 < energy <= 1"),
            ("replicates", self.replicates >= 10, "replicates >= 10"),
            ("calibration_length", self.calibration_length >= 100, "calibration_length >= 100"),
            ("window", self.window >= 1, "window >= 1"),
            ("top_features", self.top_features >= 0, "top_features >= 0"),
            ("seed", self.seed >= 0, "seed >= 0"),
        ]
        for name, ok, want in checks:
            if not ok:
                raise ConfigError(
                    f"monitor setting {name}={getattr(self, name)!r} is invalid; expected {want}"
                )
        alpha = self.alarms_per_1000 * self.calibration_length / 2000.0
        if not 0.0 < alpha < 1.0:
            raise ConfigError(
                f"alarms_per_1000={self.alarms_per_1000} with calibration_length="
                f"{self.calibration_length}: expected 0 < rate * length / 2000 < 1",
                hint="lower alarms_per_1000 or calibration_length",
            )
