"""The fixed-horizon yardstick: the textbook sample size and the z statistic."""

from __future__ import annotations

import pytest

from edgeloop.core.errors import ConfigError
from edgeloop.experiments import sample_size_per_arm, z_critical, z_p_value, z_statistic


def test_sample_size_matches_the_textbook() -> None:
    # Fleiss' formula without continuity correction: 10 % vs 20 %, alpha 5 %, power 80 % -> 199.
    assert sample_size_per_arm(0.10, 0.20) == 199
    # The case, 90 % vs 92 %.
    assert sample_size_per_arm(0.90, 0.92) == 3213


def test_z_statistic_and_p_value() -> None:
    z = float(z_statistic(450, 500, 470, 500))
    # pooled p = 0.92, se = sqrt(0.92 * 0.08 * 2 / 500) = 0.017158; diff 0.04 -> z = 2.3313.
    assert z == pytest.approx(2.3313, abs=1e-3)
    assert z_p_value(z) == pytest.approx(0.01974, abs=2e-4)
    assert z_critical(0.05) == pytest.approx(1.959964, abs=1e-6)


@pytest.mark.parametrize(
    ("p_c", "p_t", "alpha", "power"),
    [(0.9, 0.9, 0.05, 0.8), (0.0, 0.5, 0.05, 0.8), (0.9, 0.92, 0.5, 0.8), (0.9, 0.92, 0.05, 1.0)],
)
def test_bad_sample_size_inputs_are_config_errors(
    p_c: float, p_t: float, alpha: float, power: float
) -> None:
    with pytest.raises(ConfigError):
        sample_size_per_arm(p_c, p_t, alpha, power)
