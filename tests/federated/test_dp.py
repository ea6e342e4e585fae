"""DP-FedAvg clipping and noise, and epsilon from dp-accounting."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from edgeloop.federated import STRATEGIES, ClientUpdate, ServerState
from edgeloop.federated.dp import DpConfig, DpFedAvg, clip_to_norm, private_mean_delta


@given(
    arrays(np.float64, st.integers(1, 50), elements=st.floats(-1e6, 1e6)),
    st.floats(1e-3, 1e3),
)
def test_clipping_makes_every_update_norm_at_most_c(delta: np.ndarray, c: float) -> None:
    out = clip_to_norm(delta, c)
    assert np.linalg.norm(out) <= c * (1 + 1e-12)
    if np.linalg.norm(delta) <= c:
        np.testing.assert_array_equal(out, delta)


def test_clip_scales_onto_the_sphere_keeping_direction() -> None:
    np.testing.assert_allclose(clip_to_norm(np.array([3.0, 4.0]), 1.0), [0.6, 0.8])


def test_without_noise_dp_fedavg_is_the_mean_of_clipped_changes() -> None:
    g = np.zeros(2)
    ups = [ClientUpdate("a", 1, 5, np.array([3.0, 4.0])), ClientUpdate("b", 1, 500, [0.1, 0.0])]
    out = private_mean_delta(g, ups, DpConfig(0.0, 1.0), np.random.default_rng(0))
    np.testing.assert_allclose(out, [(0.6 + 0.1) / 2, 0.8 / 2])  # equal weights, not 5:500


def test_noise_std_is_z_c_over_the_expected_clients() -> None:
    cfg = DpConfig(noise_multiplier=2.0, clip_norm=0.5, expected_clients=4.0)
    assert cfg.noise_std(answered=3) == pytest.approx(0.25)
    assert DpConfig(1.0, 1.0).noise_std(answered=10) == pytest.approx(0.1)
    ups = [ClientUpdate(str(i), 1, 1, np.zeros(200_000)) for i in range(4)]
    noise = private_mean_delta(np.zeros(200_000), ups, cfg, np.random.default_rng(1))
    assert noise.std() == pytest.approx(0.25, rel=0.01)


def test_dp_fedavg_strategy_is_reproducible_under_a_seed() -> None:
    s = STRATEGIES.create("dp-fedavg", noise_multiplier=1.0, clip_norm=1.0, seed=5)
    assert isinstance(s, DpFedAvg)
    ups = [ClientUpdate("a", 1, 1, np.ones(3))]
    a = s.aggregate(np.zeros(3), ups, ServerState())
    b = s.aggregate(np.zeros(3), ups, ServerState())
    np.testing.assert_array_equal(a.weights, b.weights)
