"""Tiny trained torch parents (checkpoint folder + ONNX file) for the weight-changing optimizers.

Import from ``tests.optimize.torch_parents``. The models are real (trained on a digits subset
for a few epochs), small enough to prune, quantize and distill in about a second.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edgeloop.data import load_bundled, stratified_split
from edgeloop.data.dataset import Splits
from edgeloop.optimize import ModelSource

SUBSET = 600  # digits samples: 420 train / 90 val / 90 test


def one_torch_thread() -> Iterator[None]:
    """Fixture body: torch on one intra-op thread while a test module runs, then restored.

    These models are far too small to gain from a second thread; on a shared 2-core machine the
    second thread only waits for the other processes (measured: 8 epochs took 9 s on two
    threads under load, 1.4 s on one).
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def digits_splits(samples: int = SUBSET) -> Splits:
    """The first ``samples`` digits, split 70/15/15, stratified, seed 0."""
    ds = load_bundled("digits")
    return stratified_split(ds.subset(np.arange(samples)), val=0.15, test=0.15, seed=0)


def trained_parent(
    root: Path, splits: Splits, *, arch: str = "cnn", width: int = 8, epochs: int = 4
) -> ModelSource:
    """Train ``arch`` on ``splits``, write ``root/ckpt`` and ``root/parent.onnx``."""
    from edgeloop.formats.onnx_export import export_onnx
    from edgeloop.training import ArchConfig, FitConfig, deployable, fit, save_checkpoint

    config = ArchConfig(arch, splits.train.sample_shape, splits.train.num_classes, width=width)
    result = fit(config, splits, FitConfig(epochs=epochs, seed=0), progress=False)
    ckpt = save_checkpoint(root / "ckpt", result.module, config, None, None)
    onnx = export_onnx(deployable(result.module, config), splits.train.x[:1], root / "parent.onnx")
    return ModelSource(onnx.path, ckpt, "parent")
