"""Tiny real data sets for the training tests, built in memory (no loaders, no files)."""

from __future__ import annotations

import numpy as np
import pytest

from edgeloop.data.dataset import Dataset, Modality, Splits, Task


def blobs(n: int, seed: int, *, features: int = 4, classes: int = 3) -> Dataset:
    """Gaussian blobs around well separated centres: an easy tabular classification set."""
    rng = np.random.default_rng(seed)
    y = np.arange(n, dtype=np.int64) % classes
    centres = np.eye(classes, features, dtype=np.float32) * 4.0
    x = centres[y] + rng.normal(0.0, 0.5, (n, features)).astype(np.float32)
    names = tuple(f"c{i}" for i in range(classes))
    return Dataset("blobs", x.astype(np.float32), y, names, Modality.TABULAR)


def split3(ds: Dataset, val: int, test: int) -> Splits:
    """First ``len - val - test`` samples train, then val, then test (data is pre-shuffled)."""
    n = len(ds)
    idx = np.arange(n)
    cut1, cut2 = n - val - test, n - test
    return Splits(
        ds.subset(idx[:cut1], "train"),
        ds.subset(idx[cut1:cut2], "val"),
        ds.subset(idx[cut2:], "test"),
        seed=0,
    )


@pytest.fixture
def blob_splits() -> Splits:
    return split3(blobs(90, seed=1), val=15, test=15)


def sine_windows(n_normal: int, n_anomaly: int, seed: int) -> Dataset:
    """Windows (1, 64) of a sine with random phase (normal) vs white noise (anomaly)."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 4 * np.pi, 64, dtype=np.float32)
    phase = rng.uniform(0, 2 * np.pi, (n_normal, 1)).astype(np.float32)
    normal = np.sin(t + phase) + rng.normal(0, 0.05, (n_normal, 64))
    anomaly = rng.normal(0, 1.0, (n_anomaly, 64))
    x = np.concatenate([normal, anomaly]).astype(np.float32)[:, None, :]
    y = np.concatenate([np.zeros(n_normal), np.ones(n_anomaly)]).astype(np.int64)
    order = rng.permutation(len(y))
    return Dataset(
        "sines", x[order], y[order], ("normal", "anomaly"), Modality.SIGNAL, task=Task.ANOMALY
    )


@pytest.fixture
def sine_splits() -> Splits:
    """180 sine windows (normal) and 40 noise windows (anomaly), anomalies in every split."""
    return split3(sine_windows(180, 40, seed=3), val=50, test=60)


@pytest.fixture
def digits_splits() -> Splits:
    """sklearn's digits (1797 8x8 images, x in [0, 1]) split 70/15/15, stratified, seed 0."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    y = digits.target.astype(np.int64)
    ds = Dataset("digits", x, y, tuple(str(i) for i in range(10)), Modality.IMAGE)
    idx = np.arange(len(y))
    train, rest = train_test_split(idx, test_size=0.3, stratify=y, random_state=0)
    val, test = train_test_split(rest, test_size=0.5, stratify=y[rest], random_state=0)
    return Splits(
        ds.subset(train, "digits-train"),
        ds.subset(val, "digits-val"),
        ds.subset(test, "digits-test"),
        seed=0,
    )
