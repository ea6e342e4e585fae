"""The mixture sequential probability ratio test (mSPRT): p-values valid while you watch.

Johari, Pekelis & Walsh, "Always valid inference: continuous monitoring of A/B tests"
(Operations Research 2022; arXiv 1512.04922, 2015) and Johari, Koomen, Pekelis & Walsh,
"Peeking at A/B tests" (KDD 2017). For the difference of two means, with the estimate
delta_hat = mean_treatment - mean_control approximately N(theta, v), where
v = var_t / n_t + var_c / n_c (plug-in per-arm variances; p(1-p) for a Bernoulli arm), the
likelihood ratio of theta against theta0, mixed over theta ~ N(theta0, tau^2), is

    Lambda_n = sqrt(v / (v + tau^2)) * exp(tau^2 (delta_hat - theta0)^2 / (2 v (v + tau^2)))

(their eq. for the two-sample normal case: with n per arm and V = var_t + var_c, v = V / n
gives sqrt(V / (V + n tau^2)) exp(n^2 tau^2 (Y_n - X_n - theta0)^2 / (2 V (V + n tau^2)))).
Under theta = theta0, Lambda_n is a non-negative martingale with mean 1, so by Ville's
inequality P(sup_n Lambda_n >= 1/alpha) <= alpha: the always-valid p-value
p_n = min(p_{n-1}, 1 / Lambda_n) may be read after every batch and rejecting when p_n <= alpha
keeps the type-I error <= alpha (plug-in variances make this asymptotic; bench/ab_bench.py
measures it). Inverting the test gives the confidence sequence
{theta0 : Lambda_n(theta0) < 1/alpha}, covering theta at all times with probability >= 1 - alpha:

    delta_hat +- sqrt(v (v + tau^2) / tau^2 * (2 log(1/alpha) + log((v + tau^2) / v)))

and its running intersection is again one.

Ville's argument holds for any mixing distribution H (Johari et al. define the mSPRT for all
H). Besides the normal one, ``Mixing.TWO_POINT`` mixes over theta0 +- m with weight 1/2 each:
Wald's SPRT against the minimum effect m made two-sided,

    Lambda_n = exp(-m^2 / (2 v)) cosh(m (delta_hat - theta0) / v),

the optimal rate at |theta| = m, at the price of never stopping for effects below m / 2
(its log-likelihood drifts down there). Its confidence sequence inverts the same test:
Lambda_n(theta0) grows with |delta_hat - theta0|, so {theta0 : Lambda_n(theta0) < 1/alpha} is
delta_hat +- h with

    h = (v / m) arccosh(exp(m^2 / (2 v)) / alpha)
      = m / 2 + (v / m) (log(1/alpha) + log1p(sqrt(1 - alpha^2 exp(-m^2 / v))))

(the second form, from arccosh(e^L) = L + log1p(sqrt(1 - e^-2L)), cannot overflow). h > m / 2
however small v gets: the test cannot tell theta0 from effects within m / 2 of it, so this
interval never narrows below +- m / 2, where the normal one shrinks like sqrt(v).

With each mixing the p-value and the interval come from one test: at a look, theta0 leaves the
interval exactly when Lambda_n(theta0) >= 1/alpha (to float rounding at equality), so the
running p-value is <= alpha exactly when theta0 is outside the running intersection (while
that intersection is not empty).

Every function takes numpy arrays as well as floats, so the benchmark simulates thousands of
experiments with the same code the control plane runs once per look.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from edgeloop.core.errors import ConfigError

FloatArray = npt.NDArray[np.float64]


class Mixing(StrEnum):
    """The mixing distribution H over the effect under the alternative."""

    # N(theta0, tau^2): Johari et al.'s closed form; detects effects of any size eventually.
    NORMAL = "normal"
    # theta0 +- tau with weight 1/2 each (two-sided Wald SPRT); fastest at |effect| = tau.
    TWO_POINT = "two_point"


# tau is the spread of the effects the mixture expects. Johari et al. (sec. 4.3) choose it from
# the effects one cares about; the evidence grows fastest for effects near tau. Measured in
# docs/experiments.md (90 % vs 92 %, 2 pp minimum effect, 80 % power): the normal mixture needs
# the fewest samples with tau 1x-1.5x the minimum effect (0.25x needs ~68 % more), the two-point
# one with its points at 1x.
TAU_PER_MIN_EFFECT = {Mixing.NORMAL: 1.25, Mixing.TWO_POINT: 1.0}


def default_tau(min_effect: float, mixing: Mixing = Mixing.NORMAL) -> float:
    """The mixture's tau for a minimum effect of interest (absolute units of the metric)."""
    if not (math.isfinite(min_effect) and min_effect > 0):
        raise ConfigError(
            f"minimum effect {min_effect} is not a positive number",
            hint="give the smallest difference worth detecting, e.g. 0.02 for 2 pp accuracy",
        )
    return TAU_PER_MIN_EFFECT[mixing] * min_effect


def check_alpha(alpha: float) -> None:
    """alpha must lie in (0, 0.5): above 0.5 a test rejects more often than it keeps."""
    if not (0.0 < alpha < 0.5):
        raise ConfigError(
            f"alpha {alpha} is outside (0, 0.5)",
            hint="alpha is the false positive rate you accept; 0.05 is the usual choice",
        )


def check_tau(tau: float) -> None:
    """tau must be a positive finite number (the mixing spread, metric units)."""
    if not (math.isfinite(tau) and tau > 0):
        raise ConfigError(
            f"tau {tau} is not a positive number",
            hint="use default_tau(min_effect), the mixing standard deviation of the effect",
        )


def mixture_log_lr(
    delta_hat: npt.ArrayLike,
    var: npt.ArrayLike,
    tau: float,
    theta0: float = 0.0,
    mixing: Mixing = Mixing.NORMAL,
) -> FloatArray:
    """log Lambda_n of the two-sample mSPRT (module docstring); var is v = Var(delta_hat)."""
    check_tau(tau)
    d = np.asarray(delta_hat, dtype=np.float64) - theta0
    v = np.asarray(var, dtype=np.float64)
    t2 = tau * tau
    if mixing is Mixing.TWO_POINT:
        # log(exp(-m^2/2v) cosh(m d / v)), with log cosh x = logaddexp(x, -x) - log 2.
        x = tau * d / v
        return np.asarray(-t2 / (2.0 * v) + np.logaddexp(x, -x) - math.log(2.0))
    return np.asarray(0.5 * np.log(v / (v + t2)) + t2 * d * d / (2.0 * v * (v + t2)))


def p_value_path(log_lr: npt.ArrayLike, axis: int = -1) -> FloatArray:
    """Always-valid p-values along the looks: p_n = min(1, min_{m<=n} 1/Lambda_m)."""
    p = np.minimum(1.0, np.exp(-np.asarray(log_lr, dtype=np.float64)))
    return np.asarray(np.minimum.accumulate(p, axis=axis))


def cs_half_width(
    var: npt.ArrayLike, tau: float, alpha: float, mixing: Mixing = Mixing.NORMAL
) -> FloatArray:
    """Half-width of the always-valid confidence sequence at one look: the inversion of the
    same mixing's test (module docstring), so theta0 lies outside exactly when that look's
    Lambda_n(theta0) >= 1/alpha. Raises ConfigError for a bad tau or alpha."""
    check_tau(tau)
    check_alpha(alpha)
    v = np.asarray(var, dtype=np.float64)
    if mixing is Mixing.TWO_POINT:
        # h = (v/m) arccosh(e^L), L = m^2/(2v) + log(1/alpha), with arccosh(e^L) =
        # L + log1p(sqrt(1 - e^-2L)); (v/m) L = m/2 + (v/m) log(1/alpha), so nothing overflows.
        # e^-2L = alpha^2 exp(-m^2/v): for v/m^2 < 1e-3 it is below e^-1000, 0.0 in float64
        # either way, and the clamp keeps 1/(v/m^2) finite for the tiniest v.
        ratio = np.maximum(v / (tau * tau), 1e-3)
        tail = alpha * alpha * np.exp(-1.0 / ratio)
        log_inv_alpha = math.log(1.0 / alpha)
        return np.asarray(tau / 2.0 + v / tau * (log_inv_alpha + np.log1p(np.sqrt(1.0 - tail))))
    t2 = tau * tau
    radicand = v * (v + t2) / t2 * (2.0 * math.log(1.0 / alpha) + np.log((v + t2) / v))
    return np.asarray(np.sqrt(radicand))


def difference_variance(var_t: float, n_t: int, var_c: float, n_c: int) -> float:
    """v = var_t / n_t + var_c / n_c: the variance of the difference of two arm means."""
    return var_t / n_t + var_c / n_c


@dataclass(frozen=True, slots=True)
class SequentialState:
    """What the test remembers between looks: the running p-value and confidence sequence.

    Start from ``SequentialState()`` and call :meth:`update` at every look with the cumulative
    estimate; the p-value never increases and the interval never widens.
    """

    looks: int = 0
    p_value: float = 1.0
    low: float = -math.inf
    high: float = math.inf

    def update(
        self,
        delta_hat: float,
        var: float,
        tau: float,
        alpha: float,
        theta0: float = 0.0,
        mixing: Mixing = Mixing.NORMAL,
    ) -> SequentialState:
        """The state after one more look; raises ConfigError for a bad tau or alpha."""
        log_lr = float(mixture_log_lr(delta_hat, var, tau, theta0, mixing))
        p_value = min(self.p_value, 1.0, math.exp(-log_lr))
        half = float(cs_half_width(var, tau, alpha, mixing))
        low, high = max(self.low, delta_hat - half), min(self.high, delta_hat + half)
        if low > high:
            # The running intersection went empty: a miscoverage event (probability <= alpha).
            # Report the current interval rather than an empty one. It may hold theta0 although
            # the running p-value is <= alpha; the look at which p first reaches alpha (the one
            # decide() acts on) always has theta0 outside.
            low, high = delta_hat - half, delta_hat + half
        return SequentialState(self.looks + 1, p_value, low, high)
