"""Tiny data sets and file writers for the edgeloop.data tests (``tests.data.samples``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from edgeloop.data import Dataset, Modality


def make_images(n_per_class: int = 6, classes: int = 3, seed: int = 0) -> Dataset:
    """Grey 6x6 images: class k has a bright bar in column k, plus background speckle."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 0.2, (n_per_class * classes, 1, 6, 6)).astype(np.float32)
    y = np.repeat(np.arange(classes), n_per_class).astype(np.int64)
    for i, label in enumerate(y):
        x[i, 0, :, label] = 1.0
    return Dataset("bars", x, y, tuple(f"bar{k}" for k in range(classes)), Modality.IMAGE)


def make_signals(n_per_class: int = 5, seed: int = 0) -> Dataset:
    """Two channels of sine waves; class 0 slow, class 1 fast."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, 40, dtype=np.float32)
    rows = []
    for freq in (2.0, 7.0):
        for _ in range(n_per_class):
            phase = rng.uniform(0, np.pi)
            rows.append([np.sin(2 * np.pi * freq * t + phase), 3 * np.cos(2 * np.pi * freq * t)])
    x = np.asarray(rows, dtype=np.float32)
    y = np.repeat([0, 1], n_per_class).astype(np.int64)
    return Dataset("waves", x, y, ("slow", "fast"), Modality.SIGNAL)


def write_png(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    return path


def write_text(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path
