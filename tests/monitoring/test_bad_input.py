"""Bad input is refused with a clear EdgeError naming what is wrong (issue 12's list)."""

from __future__ import annotations

import numpy as np
import pytest

from edgeloop.core.errors import ConfigError, DataError, NotFoundError
from edgeloop.monitoring import DriftMonitor, MonitorConfig


@pytest.fixture
def mon(fast: MonitorConfig) -> DriftMonitor:
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), size=100)
    return DriftMonitor.fit(
        rng.normal(size=(100, 4)), outputs=probs, labels=rng.integers(0, 3, 100), config=fast
    )


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_reference_with_nan_or_inf_is_refused(bad: float) -> None:
    x = np.ones((10, 3))
    x[4, 2] = bad
    with pytest.raises(DataError, match=r"NaN/inf value\(s\), the first at index \(4, 2\)"):
        DriftMonitor.fit(x)


def test_a_single_row_is_refused() -> None:
    with pytest.raises(DataError, match="1 row"):
        DriftMonitor.fit(np.ones((1, 5)))


def test_a_flat_vector_is_refused() -> None:
    with pytest.raises(DataError, match=r"shape \(5,\)"):
        DriftMonitor.fit(np.arange(5.0))


def test_zero_variance_everywhere_is_refused() -> None:
    with pytest.raises(DataError, match="every feature of the reference is constant"):
        DriftMonitor.fit(np.full((20, 4), 3.0))


def test_a_sample_of_the_wrong_shape_is_refused_and_counted(mon: DriftMonitor) -> None:
    with pytest.raises(DataError, match=r"shape \(5,\).*shape \(4,\)"):
        mon.update(np.zeros(5))
    with pytest.raises(DataError, match="samples of shape"):
        mon.update_many(np.zeros((3, 5)))
    assert mon.quality.wrong_shape == 1 and mon.samples_seen == 0


def test_a_sample_that_is_not_numeric_is_refused(mon: DriftMonitor) -> None:
    with pytest.raises(DataError, match="not numeric"):
        mon.update(["a", "b", "c", "d"])
    with pytest.raises(DataError, match="not numeric"):
        mon.update_many([[1.0, 2.0], [3.0]])
    assert mon.samples_seen == 0


def test_a_label_of_a_class_the_model_lacks_is_refused(mon: DriftMonitor) -> None:
    with pytest.raises(DataError, match=r"label 3 is not a class of the model \(it has 3"):
        mon.record_label(0, 3)
    with pytest.raises(DataError, match="predicted class -1"):
        mon.record_label(-1, 0)
    with pytest.raises(DataError, match="not a class index"):
        mon.record_label(0, "cat")  # type: ignore[arg-type]
    assert mon.performance.labelled == 0


def test_reference_labels_outside_the_classes_are_refused(fast: MonitorConfig) -> None:
    probs = np.full((10, 2), 0.2)
    probs[:5] = [0.9, 0.1]
    probs[5:] = [0.3, 0.7]
    with pytest.raises(DataError, match="label 7 is not a class"):
        DriftMonitor.fit(np.random.default_rng(0).normal(size=(10, 2)), probs, [7] * 10)


def test_outputs_that_are_not_probabilities_are_refused(mon: DriftMonitor) -> None:
    with pytest.raises(DataError, match="not probabilities"):
        mon.update(np.zeros(4), np.array([2.0, -1.0, 0.0]))
    with pytest.raises(DataError, match="2 classes; the profiled model has 3"):
        mon.update(np.zeros(4), np.array([0.5, 0.5]))
    with pytest.raises(DataError, match="not probabilities"):
        DriftMonitor.fit(np.random.default_rng(0).normal(size=(10, 2)), np.ones((10, 3)))


def test_outputs_or_labels_a_monitor_was_not_fitted_for_are_refused(
    fast: MonitorConfig,
) -> None:
    x = np.random.default_rng(1).normal(size=(50, 2))
    with pytest.raises(ConfigError, match="labels were given without"):
        DriftMonitor.fit(x, labels=np.zeros(50, dtype=int), config=fast)
    plain = DriftMonitor.fit(x, config=fast)
    with pytest.raises(ConfigError, match="without the model's outputs"):
        plain.update(x[0], np.array([0.5, 0.5]))
    with pytest.raises(ConfigError, match="labels need"):
        plain.record_label(0, 1)


def test_a_flood_of_labels_keeps_the_window_bounded(mon: DriftMonitor) -> None:
    for i in range(10_000):
        mon.record_label(i % 3, 0)
    report = mon.performance
    assert report.labelled == 10_000 and report.window == 200
    assert report.accuracy == pytest.approx(np.mean([(i % 3) == 0 for i in range(9800, 10_000)]))


def test_an_unknown_detector_lists_the_known_ones() -> None:
    with pytest.raises(NotFoundError, match="known: ewma-pca"):
        DriftMonitor.fit(np.eye(3), detector="adwin")


@pytest.mark.parametrize(
    "settings", [{"lam": 1.5}, {"clip": 0.0}, {"alarms_per_1000": 5.0}, {"replicates": 2}]
)
def test_invalid_settings_are_refused(settings: dict[str, float]) -> None:
    with pytest.raises(ConfigError, match="expected"):
        MonitorConfig(**settings)  # type: ignore[arg-type]
