"""The mSPRT's maths against hand computation, and its error rates by (fast) simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgeloop.experiments import (
    Mixing,
    SequentialState,
    cs_half_width,
    mixture_log_lr,
    p_value_path,
    z_critical,
    z_statistic,
)
from edgeloop.experiments.arms import bernoulli_variance

ALPHA = 0.05
BATCH = 50


def test_lambda_matches_a_hand_computed_value() -> None:
    # delta_hat = 0.1, v = 0.01, tau = 0.1: v + tau^2 = 0.02,
    # log Lambda = 0.5 log(0.01 / 0.02) + 0.01 * 0.01 / (2 * 0.01 * 0.02) = -0.346574 + 0.25;
    # Lambda = sqrt(0.5) * e^0.25 = 0.707107 * 1.284025 = 0.907943.
    assert float(mixture_log_lr(0.1, 0.01, 0.1)) == pytest.approx(-0.0965736, abs=1e-6)
    assert math.exp(float(mixture_log_lr(0.1, 0.01, 0.1))) == pytest.approx(0.907943, abs=1e-6)


def test_two_point_lambda_matches_a_hand_computed_value() -> None:
    # delta_hat = 0.02, v = 1e-4, m = 0.02: -m^2 / 2v = -2, x = m d / v = 4,
    # log cosh 4 = 4 + log(1 + e^-8) - log 2 = 3.307188; log Lambda = 1.307188.
    got = float(mixture_log_lr(0.02, 1e-4, 0.02, mixing=Mixing.TWO_POINT))
    assert got == pytest.approx(1.307188, abs=1e-6)
    # Symmetric in the sign of the effect, and 1/Lambda > 1 (no evidence) at a zero estimate.
    assert float(mixture_log_lr(-0.02, 1e-4, 0.02, mixing=Mixing.TWO_POINT)) == pytest.approx(got)
    assert float(mixture_log_lr(0.0, 1e-4, 0.02, mixing=Mixing.TWO_POINT)) == pytest.approx(-2.0)


def test_lambda_equals_the_papers_equal_arms_form() -> None:
    # Johari et al.: sqrt(V/(V+n tau^2)) exp(n^2 tau^2 d^2 / (2 V (V + n tau^2))), V = s1^2+s2^2.
    v_sum, n, tau, d = 0.18, 400, 0.03, 0.025
    paper = 0.5 * math.log(v_sum / (v_sum + n * tau**2)) + n**2 * tau**2 * d**2 / (
        2 * v_sum * (v_sum + n * tau**2)
    )
    assert float(mixture_log_lr(d, v_sum / n, tau)) == pytest.approx(paper, rel=1e-12)


def test_lambda_against_a_null_effect_shifts_the_estimate() -> None:
    assert float(mixture_log_lr(0.05, 0.001, 0.02, theta0=0.03)) == pytest.approx(
        float(mixture_log_lr(0.02, 0.001, 0.02))
    )


def test_p_value_never_increases_and_interval_never_widens() -> None:
    rng = np.random.default_rng(1)
    state = SequentialState()
    previous = state
    for _ in range(60):
        state = state.update(float(rng.normal(0, 0.05)), 0.001, 0.02, ALPHA)
        assert state.p_value <= previous.p_value
        assert previous.low <= state.low <= state.high <= previous.high
        previous = state
    path = p_value_path(rng.normal(0, 2, size=(5, 40)), axis=1)
    assert np.all(np.diff(path, axis=1) <= 0) and np.all(path <= 1)


def _paths(rng: np.random.Generator, runs: int, looks: int, p_c: float, p_t: float):  # type: ignore[no-untyped-def]
    n = BATCH * np.arange(1, looks + 1, dtype=np.float64)
    s_c = rng.binomial(BATCH, p_c, (runs, looks)).cumsum(axis=1).astype(np.float64)
    s_t = rng.binomial(BATCH, p_t, (runs, looks)).cumsum(axis=1).astype(np.float64)
    var = (bernoulli_variance(s_c, n) + bernoulli_variance(s_t, n)) / n
    return n, s_c, s_t, (s_t - s_c) / n, var


@pytest.mark.parametrize("mixing", list(Mixing))
def test_aa_false_positive_rate_with_peeking_after_every_batch_is_at_most_alpha(
    mixing: Mixing,
) -> None:
    # 1,000 A/A experiments at 90 %, peeked at after each batch of 50 up to 3,000 per arm.
    # Pass bound: alpha + 3 standard errors of a rate alpha over 1,000 runs (0.05 + 0.0207),
    # so a correct test fails with probability < 0.2 %; the full run in docs/experiments.md.
    runs = 1000
    n, s_c, s_t, effect, var = _paths(np.random.default_rng(7), runs, 60, 0.9, 0.9)
    p = p_value_path(mixture_log_lr(effect, var, 0.025, mixing=mixing), axis=1)
    fpr = float((p <= ALPHA).any(axis=1).mean())
    assert fpr <= ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / runs)
    # The same data through a fixed z-test read at every look: far above alpha.
    z = np.abs(z_statistic(s_c, n, s_t, n))
    assert float((z > z_critical(ALPHA)).any(axis=1).mean()) > 0.2


def test_confidence_sequence_covers_the_true_difference_at_every_look() -> None:
    runs = 500
    _, _, _, effect, var = _paths(np.random.default_rng(11), runs, 80, 0.88, 0.92)
    half = cs_half_width(var, 0.025, ALPHA)
    low = np.maximum.accumulate(effect - half, axis=1)
    high = np.minimum.accumulate(effect + half, axis=1)
    covered = ((low <= 0.04) & (high >= 0.04)).all(axis=1).mean()
    assert covered >= 0.95


def test_a_clear_effect_is_found_quickly() -> None:
    _, _, _, effect, var = _paths(np.random.default_rng(3), 200, 40, 0.80, 0.90)
    p = p_value_path(mixture_log_lr(effect, var, 0.025), axis=1)
    assert float((p[:, -1] <= ALPHA).mean()) >= 0.95


def test_two_point_mixing_needs_fewer_samples_than_the_fixed_horizon_at_2pp() -> None:
    # The docs' goal in small: 90 % vs 92 %, 500 runs, horizon 4,550 per arm (80 % power in the
    # 20,000-run benchmark). The fixed test needs 3,213 per arm; the benchmark's mean is 2,779
    # with a run-to-run spread of ~1,300, so 500 runs put the mean within ~3 x 58 of it.
    runs, looks = 500, 4550 // BATCH
    _, _, _, effect, var = _paths(np.random.default_rng(21), runs, looks, 0.90, 0.92)
    p = p_value_path(mixture_log_lr(effect, var, 0.02, mixing=Mixing.TWO_POINT), axis=1)
    hit = p <= ALPHA
    first = np.where(hit.any(axis=1), hit.argmax(axis=1), looks - 1)
    promoted = hit.any(axis=1) & (effect[np.arange(runs), first] > 0)
    assert float(np.mean(BATCH * (first + 1))) < 3213
    assert float(promoted.mean()) >= 0.72
