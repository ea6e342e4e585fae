"""What one training run produced: the per-epoch record and the trained module with its figures."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import nn

from edgeloop.data.dataset import Task
from edgeloop.training.metrics import Metrics
from edgeloop.training.zoo import ArchConfig, parameter_count

if TYPE_CHECKING:
    from edgeloop.training.fit import FitConfig


@dataclass(frozen=True, slots=True)
class EpochRecord:
    """One epoch: mean train loss, val loss, the val metric (accuracy or ROC-AUC) and its time."""

    epoch: int
    train_loss: float
    val_loss: float
    val_metric: float | None
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "train_loss": self.train_loss,
            "val_loss": self.val_loss,
            "val_metric": self.val_metric,
            "seconds": self.seconds,
        }


@dataclass(frozen=True, slots=True, eq=False)
class TrainResult:
    """The trained ``module`` (eval mode, best-val-epoch weights) and how training went.

    ``test_metrics`` were measured once on the held-out test split; ``train_seconds`` is the
    wall time of all epochs (training + validation); ``threads`` is torch's intra-op threads.
    """

    module: nn.Module
    arch: ArchConfig
    config: FitConfig
    history: tuple[EpochRecord, ...]
    best_epoch: int
    stopped_early: bool
    test_metrics: Metrics
    train_seconds: float
    threads: int
    train_samples: int

    @property
    def epochs_run(self) -> int:
        return len(self.history)

    @property
    def val_metric_name(self) -> str:
        return "roc_auc" if self.arch.task is Task.ANOMALY else "accuracy"

    def to_dict(self) -> dict[str, Any]:
        return {
            "arch": self.arch.to_dict(),
            "fit": self.config.to_dict(),
            "epochs_run": self.epochs_run,
            "best_epoch": self.best_epoch,
            "stopped_early": self.stopped_early,
            "val_metric": self.val_metric_name,
            "history": [r.to_dict() for r in self.history],
            "test": self.test_metrics.to_dict(),
            "train_seconds": self.train_seconds,
            "threads": self.threads,
            "train_samples": self.train_samples,
        }

    def summary(self) -> dict[str, Any]:
        """The flat figures reports show: test metrics (None where they do not apply), epochs,
        time, sizes."""
        return {
            "arch": self.arch.arch,
            "test_accuracy": self.test_metrics.accuracy,
            "test_macro_f1": self.test_metrics.macro_f1,
            "test_roc_auc": self.test_metrics.roc_auc,
            "test_samples": self.test_metrics.samples,
            "test_note": self.test_metrics.note,
            "epochs_run": self.epochs_run,
            "best_epoch": self.best_epoch,
            "stopped_early": self.stopped_early,
            "train_seconds": self.train_seconds,
            "threads": self.threads,
            "train_samples": self.train_samples,
            "parameters": parameter_count(self.module),
        }
