"""The statistic's pieces against hand computations."""

from __future__ import annotations

import numpy as np
import pytest

from edgeloop.core.errors import DataError
from edgeloop.monitoring.detector import CalibratedStatistic, StreamingScore
from edgeloop.monitoring.statistic import ChiSquareModel, ewma, fit_model, score_rows, transform


def _fit(rows: np.ndarray, lam: float = 0.1) -> ChiSquareModel:
    return fit_model(rows, lam=lam, clip=50.0, rows_per_axis=5, energy=1.0)


def test_ewma_follows_its_recurrence_and_reaches_one_minus_keep_to_the_t() -> None:
    values = np.array([[1.0], [3.0], [-2.0]])
    lam = 0.25
    m1 = lam * 1.0
    m2 = 0.75 * m1 + lam * 3.0
    m3 = 0.75 * m2 + lam * -2.0
    assert np.allclose(ewma(values, lam)[:, 0], [m1, m2, m3])
    ones = ewma(np.ones((40, 1)), 0.1)[:, 0]
    assert np.allclose(ones, 1 - 0.9 ** np.arange(1, 41))


def test_whitened_scores_of_the_reference_have_identity_covariance(
    gaussian_reference: np.ndarray,
) -> None:
    model = _fit(gaussian_reference)
    loc, _ = transform(model, gaussian_reference)
    assert loc.shape == (500, 6)
    assert np.allclose(loc.mean(axis=0), 0.0, atol=1e-9)
    assert np.allclose(np.cov(loc, rowvar=False, bias=True), np.eye(6), atol=1e-9)


def test_energies_are_hotelling_t2_and_the_residual_off_the_axes(
    gaussian_reference: np.ndarray,
) -> None:
    model = fit_model(gaussian_reference, lam=0.1, clip=50.0, rows_per_axis=5, energy=0.7)
    assert 1 <= model.components < 6 and model.residual
    rows = gaussian_reference[:5]
    u = (rows - gaussian_reference.mean(axis=0)) / gaussian_reference.std(axis=0)
    c = u @ model.basis
    t2 = ((c / model.spread) ** 2).sum(axis=1)
    residual = u - c @ model.basis.T
    spe = (residual**2).sum(axis=1)
    _, energy = transform(model, rows)
    assert np.allclose(energy[:, 0], (t2 - model.energy_mean[0]) / model.energy_std[0])
    assert np.allclose(energy[:, 1], (spe - model.energy_mean[1]) / model.energy_std[1])


def test_the_no_shift_variance_counts_the_reference_error() -> None:
    model = _fit(np.random.default_rng(0).normal(size=(40, 3)), lam=0.05)
    assert model.denominator == pytest.approx(0.05 / 1.95 + 2 / 40)


def test_axes_are_capped_by_the_rows_that_estimate_them() -> None:
    rows = np.random.default_rng(1).normal(size=(40, 12))
    model = fit_model(rows, lam=0.05, clip=3.0, rows_per_axis=5, energy=1.0)
    assert model.components == 8


def test_constant_features_are_left_out_and_all_constant_is_refused() -> None:
    rng = np.random.default_rng(2)
    rows = np.column_stack([rng.normal(size=100), np.zeros(100), rng.normal(size=100)])
    assert _fit(rows).active.tolist() == [0, 2]
    with pytest.raises(DataError, match="constant"):
        _fit(np.ones((10, 3)))


def test_streaming_steps_give_the_batch_scores(gaussian_reference: np.ndarray) -> None:
    model = fit_model(gaussian_reference, lam=0.05, clip=3.0, rows_per_axis=5, energy=0.9)
    stream = np.random.default_rng(3).normal(size=(300, 6)) * 1.5
    loc, energy = score_rows(model, stream)
    score = StreamingScore(CalibratedStatistic(model, 1e9, 1e9))
    stepped = []
    for row in stream:
        score.step(row)
        stepped.append(score.scores)
    assert np.allclose(np.array(stepped), np.column_stack([loc, energy]))
