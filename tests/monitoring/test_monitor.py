"""The public DriftMonitor API: shapes, alarms, outputs, labels, reset and state size."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from sklearn.metrics import f1_score

from edgeloop.monitoring import AlarmKind, DriftMonitor, MonitorConfig, ScorePart


def _images(rows: int, seed: int, shift: float = 0.0) -> np.ndarray:
    """(rows, 2, 3, 4) samples: 24 correlated values, a shift added to the first 6."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(rows, 24)) + rng.normal(size=(rows, 1))
    base[:, :6] += shift
    return base.reshape(rows, 2, 3, 4)


def test_any_sample_shape_is_watched_and_a_shift_names_its_features(
    fast: MonitorConfig,
) -> None:
    mon = DriftMonitor.fit(_images(400, 0), config=fast)
    assert mon.profile.sample_shape == (2, 3, 4)
    assert mon.update_many(_images(300, 1)) == []
    alarms = mon.update_many(_images(300, 2, shift=1.0))
    assert alarms, "a one-std shift of a quarter of the values went unseen"
    index, alarm = alarms[0]
    assert alarm.kind is AlarmKind.INPUT
    assert alarm.index == 300 + index and alarm.score > alarm.threshold
    # Early in the shift the smoothed means are still noisy: most of the top 3 are shifted ones.
    assert len({f.feature for f in alarm.top_features[:3]} & set(range(6))) >= 2
    assert alarm.top_features[0].shift_std > 0.3


def test_a_gain_is_an_energy_alarm(fast: MonitorConfig) -> None:
    rng = np.random.default_rng(3)
    mon = DriftMonitor.fit(rng.normal(size=(400, 8)), config=fast)
    alarms = mon.update_many(rng.normal(size=(400, 8)) * 1.6)
    assert alarms and alarms[0][1].part is ScorePart.ENERGY


def test_update_and_update_many_agree_and_reset_starts_afresh(fast: MonitorConfig) -> None:
    reference = _images(300, 4)
    stream = np.concatenate([_images(200, 5), _images(200, 6, shift=1.5)])
    one = DriftMonitor.fit(reference, config=fast)
    singles = [(i, a) for i, x in enumerate(stream) if (a := one.update(x)) is not None]
    many = DriftMonitor.from_profile(one.profile)
    batch = many.update_many(stream)
    assert singles == batch and batch
    assert one.scores == many.scores
    many.reset()
    assert many.samples_seen == 0 and many.quality.samples == 0
    assert many.update_many(stream) == batch


def test_state_is_bounded_and_does_not_grow_with_the_stream(fast: MonitorConfig) -> None:
    rng = np.random.default_rng(8)
    reference = rng.normal(size=(600, 64))
    probs = rng.dirichlet(np.ones(10), size=600)
    mon = DriftMonitor.fit(reference, outputs=probs, labels=rng.integers(0, 10, 600), config=fast)
    before = mon.state_bytes
    mon.update_many(rng.normal(size=(500, 64)), rng.dirichlet(np.ones(10), size=500))
    for _ in range(1000):
        mon.record_label(1, 2)
    assert mon.state_bytes == before <= 64 * 1024


def test_wide_samples_are_hashed_to_64_features(fast: MonitorConfig) -> None:
    rng = np.random.default_rng(9)
    reference = rng.normal(size=(300, 1, 28, 28))
    mon = DriftMonitor.fit(reference, config=fast)
    assert mon.profile.features.hashed and mon.profile.features.width == 64
    shifted = rng.normal(size=(300, 1, 28, 28)) + 0.5
    assert mon.update_many(shifted)


def test_outputs_show_a_class_prior_shift_and_labels_give_accuracy(fast: MonitorConfig) -> None:
    rng = np.random.default_rng(10)
    labels = rng.integers(0, 4, size=800)
    logits = rng.normal(size=(800, 4)) + 3.0 * np.eye(4)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    x = rng.normal(size=(800, 5))
    mon = DriftMonitor.fit(x, outputs=probs, labels=labels, config=fast)
    out = mon.profile.outputs
    assert out is not None and out.num_classes == 4
    assert out.reference_accuracy == pytest.approx(float((probs.argmax(1) == labels).mean()))
    # Only classes 0 and 1 from sample 0 on: the inputs do not change, the predictions do.
    keep = np.flatnonzero(labels < 2)[:400]
    kinds = {a.kind for _, a in mon.update_many(x[keep], probs[keep])}
    assert AlarmKind.PREDICTION in kinds
    predicted = probs[keep].argmax(1)
    for p, t in zip(predicted, labels[keep], strict=True):
        mon.record_label(int(p), int(t))
    report = mon.performance
    window = slice(-fast.window, None)
    assert report.labelled == 400
    assert report.accuracy == pytest.approx(float((predicted == labels[keep])[window].mean()))
    assert report.macro_f1 == pytest.approx(
        f1_score(labels[keep][window], predicted[window], average="macro")
    )
    assert report.estimated_accuracy is not None


def test_nan_samples_are_counted_and_not_scored(fast: MonitorConfig) -> None:
    rng = np.random.default_rng(11)
    mon = DriftMonitor.fit(rng.normal(size=(200, 3)), config=fast)
    bad = np.array([np.nan, 0.0, np.inf])
    assert mon.update(bad) is None
    assert mon.update(np.array([0.0, 99.0, 0.0])) is None
    q = mon.quality
    assert (q.samples, q.nonfinite_samples, q.nonfinite) == (2, 1, (1, 0, 1))
    assert q.above_range == (0, 1, 1) and q.below_range == (0, 0, 0)
    assert mon.scores[AlarmKind.INPUT] != (0.0, 0.0)  # the finite sample was scored


def test_the_reference_itself_is_never_out_of_its_range(fast: MonitorConfig) -> None:
    reference = np.random.default_rng(12).normal(size=(100, 7)) / 3.0
    mon = DriftMonitor.fit(reference, config=fast)
    mon.update_many(reference)
    assert mon.quality.out_of_range == 0 and mon.quality.samples == 100


def test_the_residual_part_sees_a_shift_off_the_axes_the_others_miss(
    fast: MonitorConfig,
) -> None:
    # Two tightly coupled features: a shift of one alone leaves the principal axis nearly
    # still but moves the residual's mean.
    rng = np.random.default_rng(13)
    common = rng.normal(size=(400, 1))
    reference = np.hstack([common, common]) + 0.2 * rng.normal(size=(400, 2))
    on = DriftMonitor.fit(reference, config=replace(fast, residual=True, rows_per_axis=100))
    assert on.profile.input.residual_threshold is not None
    assert len(on.scores[AlarmKind.INPUT]) == 3
    common = rng.normal(size=(300, 1))
    stream = np.hstack([common, common]) + 0.2 * rng.normal(size=(300, 2))
    stream[:, 0] += 0.3
    alarms = on.update_many(stream)
    assert alarms and alarms[0][1].part is ScorePart.RESIDUAL
    back = DriftMonitor.from_profile(on.profile.to_bytes())
    assert back.profile.input.residual_threshold == on.profile.input.residual_threshold
