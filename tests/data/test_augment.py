"""Augmentation: shapes, labels kept, determinism per seed, each transform doing what it says."""

from __future__ import annotations

import numpy as np
import pytest

from edgeloop.core.errors import ConfigError, DataError
from edgeloop.data import (
    Dataset,
    ImageAugment,
    Modality,
    SignalAugment,
    TabularAugment,
    augment,
)


def copies_of(ds: Dataset, out: Dataset, k: int) -> np.ndarray:
    return out.x[k * len(ds) : (k + 1) * len(ds)]


def test_originals_then_copies_with_labels_repeated(images: Dataset) -> None:
    out = augment(images, copies=2, seed=1)
    assert out.x.shape == (3 * len(images), *images.sample_shape)
    assert out.x.dtype == np.float32 and out.classes == images.classes
    assert np.array_equal(out.x[: len(images)], images.x)
    assert np.array_equal(out.y, np.tile(images.y, 3))
    assert not np.array_equal(copies_of(images, out, 1), images.x)


@pytest.mark.parametrize("fixture", ["images", "signals"])
def test_same_seed_same_copies_other_seed_other_copies(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    ds: Dataset = request.getfixturevalue(fixture)
    a, b, c = augment(ds, seed=7), augment(ds, seed=7), augment(ds, seed=8)
    assert a.content_hash == b.content_hash
    assert a.content_hash != c.content_hash


def test_image_flips_are_off_by_default_and_mirror_when_on(images: Dataset) -> None:
    assert ImageAugment().flip_horizontal is False and ImageAugment().flip_vertical is False
    still = ImageAugment(max_shift=0, noise_std=0.0)
    assert np.array_equal(copies_of(images, augment(images, config=still), 1), images.x)
    flip = ImageAugment(flip_horizontal=True, max_shift=0, noise_std=0.0)
    copy = copies_of(images, augment(images, copies=1, seed=3, config=flip), 1)
    mirrored = [np.array_equal(c, o[..., ::-1]) for c, o in zip(copy, images.x, strict=True)]
    same = [np.array_equal(c, o) for c, o in zip(copy, images.x, strict=True)]
    assert all(m or s for m, s in zip(mirrored, same, strict=True))
    assert any(mirrored) and any(same)


def test_image_shift_moves_by_at_most_max_shift_with_edge_fill(images: Dataset) -> None:
    cfg = ImageAugment(max_shift=1, noise_std=0.0)
    copy = copies_of(images, augment(images, seed=2, config=cfg), 1)
    padded = np.pad(images.x, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
    for c, p in zip(copy, padded, strict=True):
        candidates = [
            p[:, 1 - dy : 7 - dy, 1 - dx : 7 - dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)
        ]
        assert any(np.array_equal(c, cand) for cand in candidates)


def test_image_noise_stays_in_the_data_range(images: Dataset) -> None:
    out = augment(images, copies=3, config=ImageAugment(max_shift=0, noise_std=0.5))
    assert out.x.min() >= images.x.min() and out.x.max() <= images.x.max()


def test_signal_scale_is_one_gain_per_channel(signals: Dataset) -> None:
    cfg = SignalAugment(jitter=0.0, scale=0.2, max_shift=0.0)
    copy = copies_of(signals, augment(signals, seed=4, config=cfg), 1)
    ratio = copy / signals.x
    assert np.allclose(ratio, ratio[:, :, :1], rtol=1e-4)
    assert not np.allclose(ratio, 1.0)


def test_signal_jitter_is_relative_to_channel_spread(signals: Dataset) -> None:
    cfg = SignalAugment(jitter=0.05, scale=0.0, max_shift=0.0)
    noise = copies_of(signals, augment(signals, copies=1, seed=5, config=cfg), 1) - signals.x
    measured = noise.std(axis=2) / signals.x.std(axis=2)
    assert 0.03 < measured.mean() < 0.07


def test_signal_time_shift_keeps_values_in_order(signals: Dataset) -> None:
    cfg = SignalAugment(jitter=0.0, scale=0.0, max_shift=0.1)
    copy = copies_of(signals, augment(signals, seed=6, config=cfg), 1)
    length, pad = signals.x.shape[2], 4
    for c, o in zip(copy, signals.x, strict=True):
        p = np.pad(o, ((0, 0), (pad, pad)), mode="edge")
        assert any(
            np.array_equal(c, p[:, pad - s : pad - s + length]) for s in range(-pad, pad + 1)
        )


def test_tabular_noise_keeps_shape() -> None:
    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    ds = Dataset("t", x, np.array([0, 1] * 3), ("a", "b"), Modality.TABULAR)
    out = augment(ds, copies=1, config=TabularAugment(noise_std=0.1))
    assert out.x.shape == (12, 2) and not np.array_equal(out.x[6:], x)


def test_zero_copies_returns_the_originals(images: Dataset) -> None:
    assert augment(images, copies=0).content_hash == images.content_hash


def test_wrong_config_modality_and_bad_values(images: Dataset) -> None:
    with pytest.raises(ConfigError) as err:
        augment(images, config=SignalAugment())
    assert "signal" in err.value.message and "image" in err.value.message
    with pytest.raises(ConfigError, match="-1"):
        augment(images, copies=-1)
    with pytest.raises(ConfigError, match="noise_std=-0.1"):
        ImageAugment(noise_std=-0.1)
    with pytest.raises(ConfigError, match="max_shift=1.5"):
        SignalAugment(max_shift=1.5)


def test_nan_data_must_be_cleaned_first(images: Dataset) -> None:
    x = images.x.copy()
    x[0, 0, 0, 0] = np.nan
    with pytest.raises(DataError, match="clean"):
        augment(images.with_arrays(x, images.y))
