"""epsilon from the RDP accountant of Google's dp-accounting (the ``fl`` extra)."""

from __future__ import annotations

import itertools

import pytest

from edgeloop.core.errors import ConfigError
from edgeloop.federated.accountant import (
    ORDERS,
    PrivacyAccountant,
    check_next_round,
    max_rounds,
)

dpa = pytest.importorskip("dp_accounting", reason="the fl extra (dp-accounting) is not installed")
rdp_privacy_accountant = pytest.importorskip("dp_accounting.rdp.rdp_privacy_accountant")


def library_epsilon(q: float, z: float, rounds: int, delta: float) -> float:
    acc = rdp_privacy_accountant.RdpAccountant(list(ORDERS))
    acc.compose(dpa.PoissonSampledDpEvent(q, dpa.GaussianDpEvent(z)), rounds)
    return float(acc.get_epsilon(delta))


@pytest.mark.parametrize(
    ("q", "z", "rounds", "expected"),
    [
        # all 10 of 10 clients each round (the benchmark's setting): no subsampling amplification
        (1.0, 1.0, 20, 30.12663110385034),
        (0.1, 1.0, 100, 7.972921510380539),
        # Abadi et al. 2016's MNIST setting, q = 256/60000, z = 1.1, 60 epochs
        (256 / 60000, 1.1, 60 * 60000 // 256, 2.5969811785948815),
    ],
)
def test_epsilon_matches_dp_accounting(q: float, z: float, rounds: int, expected: float) -> None:
    acc = PrivacyAccountant(noise_multiplier=z, sampling_rate=q, delta=1e-5)
    assert acc.epsilon(rounds) == pytest.approx(expected, rel=1e-9)
    assert acc.epsilon(rounds) == pytest.approx(library_epsilon(q, z, rounds, 1e-5), rel=1e-12)


def test_epsilon_grows_with_rounds() -> None:
    acc = PrivacyAccountant.for_fleet(1.0, per_round=10, population=100)
    eps = [acc.epsilon(t) for t in (0, 1, 2, 5, 10, 50)]
    assert eps[0] == 0.0
    assert all(a < b for a, b in itertools.pairwise(eps))


def test_a_round_that_would_exceed_the_target_is_refused() -> None:
    acc = PrivacyAccountant.for_fleet(1.0, per_round=10, population=100)
    limit = max_rounds(acc, target_epsilon=3.0)
    assert acc.epsilon(limit) <= 3.0 < acc.epsilon(limit + 1)
    ok = check_next_round(acc, limit - 1, 3.0)
    assert ok.allowed and ok.epsilon_after == pytest.approx(acc.epsilon(limit))
    refused = check_next_round(acc, limit, 3.0)
    assert not refused.allowed and refused.epsilon_after > 3.0 >= refused.epsilon_now


def test_bad_accountant_settings_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match="0 < q <= 1"):
        PrivacyAccountant(1.0, sampling_rate=1.5)
    with pytest.raises(ConfigError, match="per_round <= population"):
        PrivacyAccountant.for_fleet(1.0, per_round=20, population=10)
