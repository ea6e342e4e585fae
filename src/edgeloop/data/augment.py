"""Augmentation per modality, driven by a typed config and a seed.

Augment the *training* split only: augmented copies of a test sample in the training data
would leak it. Random numbers here make new training samples; they are never reported as
figures. The same ``seed`` always gives the same copies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from edgeloop.core.errors import ConfigError, DataError
from edgeloop.data.dataset import Dataset, Modality

F32 = npt.NDArray[np.float32]


def _check(owner: str, **values: float) -> None:
    bad = {k: v for k, v in values.items() if not (math.isfinite(v) and v >= 0)}
    if bad:
        raise ConfigError(
            f"{owner}: {', '.join(f'{k}={v}' for k, v in bad.items())} must be finite and >= 0",
            hint="0 turns that augmentation off",
        )


def _shift_edge(x: F32, offsets: npt.NDArray[np.int64], pad: int, axis: int) -> F32:
    """Shift each sample along ``axis`` by its offset in [-pad, pad], repeating the edge value
    into the gap (a wrap-around would glue the end of a signal onto its start)."""
    widths = [(0, 0)] * x.ndim
    widths[axis] = (pad, pad)
    padded = np.pad(x, widths, mode="edge")
    length = x.shape[axis]
    index = (pad - offsets)[:, None] + np.arange(length)[None, :]
    shape = [len(x)] + [1] * (x.ndim - 1)
    shape[axis] = length
    return np.take_along_axis(padded, index.reshape(shape), axis=axis)


@dataclass(frozen=True, slots=True)
class ImageAugment:
    """Images (n, c, h, w).

    Flips are off by default: mirroring changes the meaning of digits, letters and most
    asymmetric objects (a mirrored 2 is not a 2); turn them on for data where the mirror image
    belongs to the same class (leaves, textures, top-down views). ``max_shift`` is in pixels per
    axis; ``noise_std`` is absolute, in pixel units (0.02 = 2 % of a [0, 1] pixel range), and
    noisy pixels are clipped to the data set's own value range.
    """

    modality: ClassVar[Modality] = Modality.IMAGE
    flip_horizontal: bool = False
    flip_vertical: bool = False
    max_shift: int = 1
    noise_std: float = 0.02

    def __post_init__(self) -> None:
        _check("ImageAugment", max_shift=self.max_shift, noise_std=self.noise_std)

    def apply(self, x: F32, rng: np.random.Generator) -> F32:
        out = x.copy()
        for enabled, axis in ((self.flip_horizontal, 3), (self.flip_vertical, 2)):
            if enabled:
                flip = rng.random(len(out)) < 0.5
                out[flip] = np.flip(out[flip], axis=axis)
        if self.max_shift:
            for axis in (2, 3):
                offsets = rng.integers(-self.max_shift, self.max_shift + 1, len(out))
                out = _shift_edge(out, offsets, self.max_shift, axis)
        if self.noise_std:
            noisy = out + rng.normal(0.0, self.noise_std, out.shape).astype(np.float32)
            out = np.clip(noisy, x.min(), x.max())
        return out


@dataclass(frozen=True, slots=True)
class SignalAugment:
    """Signals (n, channels, time): time shift, then per-channel gain, then jitter.

    Defaults follow Um et al., "Data augmentation of wearable sensor data for Parkinson's
    disease monitoring using CNNs", ICMI 2017 (arXiv:1706.00527): scaling sigma 0.1 and jitter
    sigma 0.03, the latter taken relative to each channel's std within the sample because our
    signals are not standardised. ``max_shift`` is a fraction of the length.
    """

    modality: ClassVar[Modality] = Modality.SIGNAL
    jitter: float = 0.03
    scale: float = 0.1
    max_shift: float = 0.1

    def __post_init__(self) -> None:
        _check("SignalAugment", jitter=self.jitter, scale=self.scale, max_shift=self.max_shift)
        if self.max_shift >= 1:
            raise ConfigError(f"SignalAugment: max_shift={self.max_shift} must be below 1")

    def apply(self, x: F32, rng: np.random.Generator) -> F32:
        out = x
        pad = int(self.max_shift * x.shape[2])
        if pad:
            out = _shift_edge(out, rng.integers(-pad, pad + 1, len(out)), pad, axis=2)
        if self.scale:
            out = out * rng.normal(1.0, self.scale, (len(out), out.shape[1], 1)).astype(np.float32)
        if self.jitter:
            spread = out.std(axis=2, keepdims=True)
            out = out + (rng.normal(0.0, 1.0, out.shape) * self.jitter * spread).astype(np.float32)
        return out.astype(np.float32, copy=False)


@dataclass(frozen=True, slots=True)
class TabularAugment:
    """Tabular rows (n, features): gaussian noise of ``noise_std`` times each feature's std."""

    modality: ClassVar[Modality] = Modality.TABULAR
    noise_std: float = 0.03

    def __post_init__(self) -> None:
        _check("TabularAugment", noise_std=self.noise_std)

    def apply(self, x: F32, rng: np.random.Generator) -> F32:
        noise = rng.normal(0.0, 1.0, x.shape) * self.noise_std * x.std(axis=0, keepdims=True)
        return np.asarray(x + noise, dtype=np.float32)


AugmentConfig = ImageAugment | SignalAugment | TabularAugment


def default_config(modality: Modality) -> AugmentConfig:
    """The augmentation :func:`augment` uses when given no config."""
    defaults: dict[Modality, AugmentConfig] = {
        Modality.IMAGE: ImageAugment(),
        Modality.SIGNAL: SignalAugment(),
        Modality.TABULAR: TabularAugment(),
    }
    return defaults[modality]


def augment(
    ds: Dataset, copies: int = 1, seed: int = 0, config: AugmentConfig | None = None
) -> Dataset:
    """The original samples followed by ``copies`` augmented copies of all of them.

    Labels are repeated unchanged, so sample ``i + k * len(ds)`` is a copy of sample ``i``.

    Raises:
        ConfigError: ``copies`` is negative, or ``config`` is for another modality.
        DataError: the data holds NaN or inf (clean it first: noise would spread it).
    """
    if copies < 0:
        raise ConfigError(f"copies={copies} must be >= 0")
    cfg = default_config(ds.modality) if config is None else config
    if cfg.modality is not ds.modality:
        raise ConfigError(
            f"{type(cfg).__name__} augments {cfg.modality.value} data but {ds.name!r} is "
            f"{ds.modality.value}",
            hint=f"pass {type(default_config(ds.modality)).__name__}(...) or no config",
        )
    x = np.asarray(ds.x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise DataError(
            f"{ds.name!r} holds NaN or inf values; augmenting would spread them",
            hint="run edgeloop.data.clean(ds) first",
        )
    if copies == 0 or len(x) == 0:
        return ds.with_arrays(x, ds.y)
    rng = np.random.default_rng(seed)
    parts = [x] + [cfg.apply(x, rng) for _ in range(copies)]
    return ds.with_arrays(np.concatenate(parts), np.tile(ds.y, copies + 1))
