"""The optional third part of the statistic: where, off the principal axes, the mean moved.

The energy part sees a shift off the reference's principal axes only through the size of the
residual (a quadratic, so a small mean shift drowns in the residual's own spread). Following
the residual vector itself, ``r = u - V V' u`` (``k`` values, in reference std units, clipped),
with an EWMA sees a mean shift linearly, as the location part does on the axes. On the
benchmark it finds the covariate shift of BasicMotions in 10 of 10 seeds instead of 5 and of
MIT-BIH in 9 instead of 5, calibrated to its own target (``residual_alarms_per_1000``); on
digits it adds nothing and raises false alarms from 0.02 to 0.10 per 1,000, so it is watched
only for references of fewer than 5 rows per feature (``MonitorConfig.watches_residual``;
docs/monitoring.md).
"""

from __future__ import annotations

import numpy as np

from edgeloop.monitoring.statistic import F64, ChiSquareModel


def residual_rows(model: ChiSquareModel, rows: F64) -> F64:
    """Clipped residuals off the principal axes, ``(m, k)``."""
    u = (rows[:, model.active] - model.mean) / model.scale
    return np.clip(u - (u @ model.basis) @ model.basis.T, -model.clip, model.clip)


def residual_calibration_rows(model: ChiSquareModel, rows: F64) -> F64:
    """Reference residuals inflated to what new rows leave (held-out / in-sample energy).

    Axes fitted on the reference leave it a smaller residual than new rows; the held-out
    residual energy (``model.energy_mean[1]``, K-fold) over the in-sample one is the factor.
    """
    r = residual_rows(model, rows)
    inside = float((r * r).sum(axis=1).mean())
    inflation = max(1.0, float(model.energy_mean[1]) / max(inside, 1e-12))
    inflated: F64 = r * np.sqrt(inflation)
    return inflated
