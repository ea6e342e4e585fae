"""The fixed-horizon two-proportion z-test: the classical test the sequential one replaces.

It is valid only when read once, at a sample size fixed in advance; read after every batch
("peeking") its false positive rate climbs far above alpha (Armitage, McPherson & Rowe 1969;
measured in docs/experiments.md). It is here as the yardstick: its sample size per arm is what
the sequential test is compared against.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

from edgeloop.core.errors import ConfigError
from edgeloop.experiments.sequential import FloatArray, check_alpha

_NORMAL = NormalDist()


def _check_rate(name: str, rate: float) -> None:
    if not (0.0 < rate < 1.0):
        raise ConfigError(
            f"{name} {rate} is outside (0, 1)",
            hint="give the expected success rate of the arm, e.g. 0.90 for 90 % accuracy",
        )


def sample_size_per_arm(
    p_control: float, p_treatment: float, alpha: float = 0.05, power: float = 0.80
) -> int:
    """Samples per arm for a two-sided two-proportion z-test (Fleiss, Levin & Paik 2003, 4.14).

    n = (z_{1-alpha/2} sqrt(2 pbar qbar) + z_{1-beta} sqrt(p1 q1 + p2 q2))^2 / (p1 - p2)^2,
    with pbar the mean of the two rates, without continuity correction; rounded up.
    Raises ConfigError for rates outside (0, 1), equal rates, alpha or power out of range.
    """
    _check_rate("p_control", p_control)
    _check_rate("p_treatment", p_treatment)
    check_alpha(alpha)
    if not (0.5 <= power < 1.0):
        raise ConfigError(f"power {power} is outside [0.5, 1)", hint="0.80 is the usual choice")
    delta = p_treatment - p_control
    if delta == 0.0:
        raise ConfigError(
            "p_control equals p_treatment: no sample size detects a zero difference",
            hint="give the smallest treatment rate worth detecting",
        )
    pbar = (p_control + p_treatment) / 2.0
    z_a = _NORMAL.inv_cdf(1.0 - alpha / 2.0)
    z_b = _NORMAL.inv_cdf(power)
    spread = p_control * (1 - p_control) + p_treatment * (1 - p_treatment)
    root = z_a * math.sqrt(2.0 * pbar * (1.0 - pbar)) + z_b * math.sqrt(spread)
    return math.ceil(root * root / (delta * delta))


def z_statistic(
    s_control: npt.ArrayLike,
    n_control: npt.ArrayLike,
    s_treatment: npt.ArrayLike,
    n_treatment: npt.ArrayLike,
) -> FloatArray:
    """Pooled two-proportion z = (p_t - p_c) / sqrt(p (1-p) (1/n_c + 1/n_t)); 0 where p(1-p)=0."""
    sc, nc = np.asarray(s_control, np.float64), np.asarray(n_control, np.float64)
    st, nt = np.asarray(s_treatment, np.float64), np.asarray(n_treatment, np.float64)
    pooled = (sc + st) / (nc + nt)
    se = np.sqrt(pooled * (1.0 - pooled) * (1.0 / nc + 1.0 / nt))
    diff = st / nt - sc / nc
    return np.asarray(np.divide(diff, se, out=np.zeros_like(diff), where=se > 0))


def z_critical(alpha: float) -> float:
    """The two-sided critical value z_{1 - alpha/2}."""
    check_alpha(alpha)
    return _NORMAL.inv_cdf(1.0 - alpha / 2.0)


def z_p_value(z: float) -> float:
    """Two-sided p-value of a z statistic, valid for one look at a fixed horizon."""
    return 2.0 * (1.0 - _NORMAL.cdf(abs(z)))
