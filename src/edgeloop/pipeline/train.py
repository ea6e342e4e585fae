"""The train stage: fit a zoo architecture on a split, keep a checkpoint beside it.

``warm_start`` takes a checkpoint folder (``edgeloop train --out``, or the quickstart's
``checkpoint/``): training then continues from those weights instead of a fresh initialisation,
which is how a retraining job fine-tunes the deployed model on new data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeloop.data.dataset import Dataset, Splits

if TYPE_CHECKING:
    from torch import nn

    from edgeloop.training.result import TrainResult
    from edgeloop.training.zoo import ArchConfig


@dataclass(frozen=True, slots=True)
class Trained:
    """The trained model (best validation epoch) and the checkpoint written for it."""

    result: TrainResult
    checkpoint: Path

    def to_dict(self) -> dict[str, Any]:
        return {
            "train": self.result.summary(),
            "history": [r.to_dict() for r in self.result.history],
            "checkpoint": str(self.checkpoint),
        }


def train(
    splits: Splits,
    dataset: Dataset,
    arch: str,
    checkpoint_dir: Path,
    *,
    epochs: int,
    seed: int,
    warm_start: Path | None = None,
    progress: bool = True,
) -> Trained:
    """Train ``arch`` on ``splits`` (early stopping on validation, test measured once).

    ``dataset`` is the (clean) data set the splits came from; the checkpoint records its name,
    classes and content hash.

    Raises:
        ConfigError: arch and data disagree, the loss diverged, or ``warm_start`` was trained
            for another architecture or shape.
        DataError: a split too small to train on.
    """
    from edgeloop.training.checkpoint import save_checkpoint
    from edgeloop.training.fit import FitConfig, fit
    from edgeloop.training.zoo import ArchConfig

    config = ArchConfig(
        arch=arch, input_shape=dataset.sample_shape, num_classes=dataset.num_classes
    )
    fit_cfg = FitConfig(epochs=epochs, seed=seed)
    module = None
    if warm_start is not None:
        module, config = _warm_start(warm_start, config)
    result = fit(config, splits, fit_cfg, progress=progress, module=module)
    # Kept so weight-changing optimizations (pruning, QAT) can start from it later.
    saved = save_checkpoint(
        checkpoint_dir, result.module, config, fit_cfg, result.test_metrics, dataset=dataset
    )
    return Trained(result, saved)


def _warm_start(path: Path, wanted: ArchConfig) -> tuple[nn.Module, ArchConfig]:
    """The checkpoint's module and its own config (its width and dropout), refused when its
    architecture, input shape or classes differ from ``wanted``."""
    from edgeloop.core.errors import ConfigError
    from edgeloop.training.checkpoint import load_checkpoint

    module, arch = load_checkpoint(path)
    have = (arch.arch, arch.input_shape, arch.num_classes)
    if have != (wanted.arch, wanted.input_shape, wanted.num_classes):
        raise ConfigError(
            f"warm-start checkpoint {path} is {arch.arch} for input {arch.input_shape} with "
            f"{arch.num_classes} classes; this run trains {wanted.arch} for input "
            f"{wanted.input_shape} with {wanted.num_classes} classes",
            hint="warm-start from a checkpoint of the same architecture, input shape and classes",
        )
    return module, arch
