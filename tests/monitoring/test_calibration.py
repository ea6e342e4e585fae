"""Thresholds calibrated for the reference size: false alarms by simulation, and detection."""

from __future__ import annotations

import numpy as np
import pytest

from edgeloop.core.errors import ConfigError
from edgeloop.monitoring import MonitorConfig
from edgeloop.monitoring.calibration import calibrate_thresholds
from edgeloop.monitoring.registry import get_detector
from edgeloop.monitoring.statistic import calibration_rows, fit_model, score_rows

CONFIG = MonitorConfig(replicates=32, calibration_length=2000, alarms_per_1000=0.05)
STREAM = 2000
REFRACTORY = 200


def _alarms(above: np.ndarray) -> list[int]:
    """Up-crossings, counted with a refractory period as the benchmark does."""
    starts = np.flatnonzero(above & ~np.r_[False, above[:-1]])
    kept: list[int] = []
    for t in starts:
        if not kept or t - kept[-1] >= REFRACTORY:
            kept.append(int(t))
    return kept


def _streams_with_false_alarms(threshold_of: str) -> int:
    """Of 30 no-shift streams, how many raise at least one alarm.

    Each seed: a reference of 40 rows of 6 skewed, correlated features; the stream: 2,000
    draws with replacement from 40 other rows of the same population (the benchmark's own
    situation: reference and stream differ by sampling alone).
    """
    hit = 0
    for seed in range(30):
        rng = np.random.default_rng(seed)
        mix = np.eye(6) + 0.5
        ref, other = (rng.gamma(2.0, size=(40, 6)) @ mix for _ in range(2))
        stat = get_detector("ewma-pca").fit(ref, CONFIG)
        m = stat.model
        loc, energy = score_rows(m, other[rng.integers(0, 40, size=STREAM)])
        lines = (stat.location_threshold, stat.energy_threshold)
        if threshold_of == "chi-square table":
            # The 99.99 % points of chi-square with p + ~3 and 2 degrees of freedom, on scores
            # normalised by the EWMA variance alone: the reference taken as exact.
            f = m.lam / (2 - m.lam)
            loc, energy = loc * m.denominator / f, energy * m.denominator / f
            lines = (m.components + 3.72 * np.sqrt(2 * m.components) + 8, 18.4)
        hit += bool(_alarms((loc > lines[0]) | (energy > lines[1])))
    return hit


def test_calibrated_thresholds_leave_most_small_reference_streams_without_alarm() -> None:
    assert _streams_with_false_alarms("calibrated") <= 5


def test_a_chi_square_table_threshold_alarms_on_most_small_reference_streams() -> None:
    assert _streams_with_false_alarms("chi-square table") >= 25


def test_a_one_sigma_shift_is_caught_within_a_hundred_samples(
    gaussian_reference: np.ndarray,
) -> None:
    stat = get_detector("ewma-pca").fit(gaussian_reference, CONFIG)
    rng = np.random.default_rng(11)
    stream = gaussian_reference[rng.integers(0, 500, size=600)] + 0.0
    stream[300:] += gaussian_reference.std(axis=0)
    loc, energy = score_rows(stat.model, stream)
    above = (loc > stat.location_threshold) | (energy > stat.energy_threshold)
    alarms = _alarms(above)
    assert alarms and 300 <= alarms[0] < 400


def test_thresholds_are_seeded_and_a_lower_rate_asks_for_more_evidence(
    gaussian_reference: np.ndarray,
) -> None:
    model = fit_model(gaussian_reference, lam=0.03, clip=3.0, rows_per_axis=5, energy=0.95)

    parts = calibration_rows(model, gaussian_reference)

    def lines(rate: float, seed: int) -> tuple[float, ...]:
        return calibrate_thresholds(
            parts,
            lam=model.lam,
            denominator=model.denominator,
            alarms_per_1000=rate,
            replicates=40,
            length=1000,
            seed=seed,
        )

    assert lines(0.1, 5) == lines(0.1, 5)
    strict, loose = lines(0.02, 5), lines(0.5, 5)
    assert strict[0] >= loose[0] and strict[1] >= loose[1]


@pytest.mark.parametrize(("rate", "replicates"), [(0.0, 40), (1.0, 40), (0.1, 3)])
def test_calibration_refuses_settings_without_a_quantile(rate: float, replicates: int) -> None:
    rows = np.random.default_rng(0).normal(size=(50, 2))
    model = fit_model(rows, lam=0.03, clip=3.0, rows_per_axis=5, energy=0.95)
    with pytest.raises(ConfigError, match="calibration"):
        calibrate_thresholds(
            calibration_rows(model, rows),
            lam=model.lam,
            denominator=model.denominator,
            alarms_per_1000=rate,
            replicates=replicates,
            length=4000,
            seed=0,
        )


def test_the_max_of_a_known_stream_is_found_per_part() -> None:
    # Two parts of one column each; every replicate streams the same constant rows, so the
    # EWMA climbs to the constant and the largest squared norm is its square over f + 2/n.
    ones = np.ones((5, 1))
    lines = calibrate_thresholds(
        [ones, 2 * ones],
        lam=0.5,
        denominator=1.0,
        alarms_per_1000=0.1,
        replicates=10,
        length=60,
        seed=0,
    )
    assert lines == pytest.approx((1.0, 4.0))
