"""What the weight-changing optimizers (QAT, pruning, distillation) share: train, export, record.

Each starts from the parent's torch checkpoint, trains on ``splits.train`` with early stopping on
``splits.val``, and never sees ``splits.test``: :func:`held_in` hands training a copy of the
splits whose test part is the val part (``training.fit`` scores its "test" split once at the
end; here that is the val split). The test split only reaches an optimizer through
:meth:`OptimizerBase.fit`, which keeps its inputs for the parity the variant reports.

``fit`` keeps the splits; ``apply`` does the training, since only ``apply`` is given the
checkpoint to start from. A variant's new weights are written beside its ONNX file as a
checkpoint folder (``NAME.ckpt``) so a later step of a recipe can start from them.
"""

from __future__ import annotations

import importlib.metadata
import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
from torch import nn

from edgeloop.core.errors import ConfigError
from edgeloop.data.dataset import Splits, Task
from edgeloop.formats.onnx_export import export_onnx
from edgeloop.optimize.base import ModelSource, OptimizerBase, Variant, require_checkpoint
from edgeloop.optimize.pruned_checkpoint import load_module
from edgeloop.training.fit import FitConfig, TrainResult, fit
from edgeloop.training.metrics import evaluate
from edgeloop.training.zoo import ArchConfig

CLASSIFIER_ARCHES = ("mlp", "cnn", "ds-cnn", "cnn1d")


def fit_config(
    method: str,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    patience: int,
    seed: int,
    least_epochs: int = 1,
) -> FitConfig | None:
    """The fine-tuning schedule, validated; None for ``epochs == 0`` where ``least_epochs`` is 0.

    Raises:
        ConfigError: a value out of range; the message names the method and the bad value.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < least_epochs:
        raise ConfigError(
            f"method {method!r}: epochs {epochs!r} is out of range; expected an integer >= "
            f"{least_epochs}" + (" (0: no fine-tuning)" if least_epochs == 0 else "")
        )
    try:
        config = FitConfig(
            epochs=max(epochs, 1), batch_size=batch_size, lr=lr, patience=patience, seed=seed
        )
    except ConfigError as exc:
        raise ConfigError(f"method {method!r}: {exc.message}", hint=exc.hint) from exc
    return None if epochs == 0 else config


def check_range(
    method: str, name: str, value: float, lo: float, hi: float, *, closed: bool = False
) -> None:
    """Raise ConfigError unless ``value`` is a finite number in (lo, hi), or [lo, hi] if
    ``closed``; the message names the method, the setting, the value and the range."""
    number = not isinstance(value, bool) and isinstance(value, int | float)
    inside = number and math.isfinite(value) and (lo <= value <= hi if closed else lo < value < hi)
    if not inside:
        op = "<=" if closed else "<"
        raise ConfigError(
            f"method {method!r}: {name} {value!r} is out of range; "
            f"expected {lo:g} {op} {name} {op} {hi:g}"
        )


def held_in(splits: Splits) -> Splits:
    """The splits training may see: train, val, and val again in place of test."""
    return Splits(train=splits.train, val=splits.val, test=splits.val, seed=splits.seed)


def tool_versions(*packages: str) -> dict[str, str]:
    """Installed versions of torch, onnx, onnxruntime and ``packages`` (distribution names)."""
    out: dict[str, str] = {}
    for name in ("torch", "onnx", "onnxruntime", "onnxscript", *packages):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def checkpoint_beside(out: Path) -> Path:
    """The checkpoint folder written next to the variant ``out``: ``NAME.ckpt``."""
    return out.with_name(f"{out.stem}.ckpt")


def show_progress() -> bool:
    """Training progress bars go to stderr, and only when a person watches it."""
    return sys.stderr.isatty()


class FineTuneOptimizer(OptimizerBase):
    """Base of the optimizers that train: keeps the held-in splits, loads the parent."""

    needs_data: ClassVar[bool] = True
    needs_checkpoint: ClassVar[bool] = True
    # Arches the method can handle; None means every zoo arch.
    arches: ClassVar[tuple[str, ...] | None] = None
    # The least `epochs` setting: 0 where the method is useful without fine-tuning.
    least_epochs: ClassVar[int] = 1
    # The schedule settings every subclass stores (see set_schedule).
    epochs: int
    lr: float
    batch_size: int
    patience: int
    seed: int

    def set_schedule(
        self, *, epochs: int, lr: float, batch_size: int, patience: int, seed: int
    ) -> None:
        """Validate and store the fine-tuning settings.

        Raises:
            ConfigError: a value out of range (the message names it).
        """
        fit_config(
            self.name,
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            patience=patience,
            seed=seed,
            least_epochs=self.least_epochs,
        )
        self.epochs, self.lr, self.batch_size = epochs, lr, batch_size
        self.patience, self.seed = patience, seed

    def schedule(self) -> FitConfig | None:
        """The stored settings as a FitConfig; None when ``epochs`` is 0 (no fine-tuning)."""
        return fit_config(
            self.name,
            epochs=self.epochs,
            lr=self.lr,
            batch_size=self.batch_size,
            patience=self.patience,
            seed=self.seed,
            least_epochs=self.least_epochs,
        )

    def required_schedule(self) -> FitConfig:
        """:meth:`schedule` for methods that always train (``least_epochs`` >= 1)."""
        config = self.schedule()
        if config is None:
            raise ConfigError(f"method {self.name!r} needs epochs >= 1")
        return config

    def fit(self, data: Splits) -> Self:
        """Keep ``data`` (test inputs for parity; train / val for :meth:`apply` to train on)."""
        super().fit(data)
        self.splits_ = held_in(data)
        return self

    def apply(self, source: ModelSource, out: Path) -> Variant:
        raise NotImplementedError  # each method trains its own way

    def fitted_splits(self) -> Splits:
        """The held-in splits from :meth:`fit`; raises ConfigError before it."""
        if not hasattr(self, "splits_"):
            raise ConfigError(
                f"method {self.name!r} was not fitted: call fit(splits) before apply()",
                hint="on the command line, pass --data",
            )
        splits: Splits = self.splits_
        return splits

    def load_parent(self, source: ModelSource) -> tuple[nn.Module, ArchConfig]:
        """The parent's torch module (pruned or not) and its arch, checked against the data.

        Raises:
            ConfigError: no checkpoint, an arch the method cannot handle, or data that does not
                fit the model.
            NotFoundError, UntrustedArtifactError: a missing or corrupt checkpoint.
        """
        folder = require_checkpoint(self, source)
        module, arch = load_module(folder)
        if self.arches is not None and arch.arch not in self.arches:
            raise ConfigError(
                f"method {self.name!r} handles the classifier arches "
                f"{', '.join(self.arches)}; checkpoint {str(folder)!r} holds arch {arch.arch!r}",
                hint="for this model use static-int8, prune-structured or prune-unstructured",
            )
        train = self.fitted_splits().train
        if train.sample_shape != arch.input_shape:
            raise ConfigError(
                f"data set {train.name!r} has samples of shape {train.sample_shape}; the model "
                f"in {str(folder)!r} takes {arch.input_shape}",
                hint="pass the data set the model was trained on",
            )
        if arch.task is Task.CLASSIFICATION and train.num_classes != arch.num_classes:
            raise ConfigError(
                f"data set {train.name!r} has {train.num_classes} classes; the model in "
                f"{str(folder)!r} has {arch.num_classes} outputs",
                hint="pass the data set the model was trained on",
            )
        return module, arch

    def train(self, module: nn.Module, arch: ArchConfig, config: FitConfig) -> TrainResult:
        """Fine-tune ``module`` in place on the held-in splits (best val epoch kept)."""
        return fit(arch, self.fitted_splits(), config, progress=show_progress(), module=module)

    def example(self) -> np.ndarray[Any, np.dtype[np.float32]]:
        """One training sample with its batch axis, to trace the export with."""
        return np.ascontiguousarray(self.fitted_splits().train.x[:1], dtype=np.float32)

    def export(self, module: nn.Module, out: Path) -> Path:
        """Export ``module`` (already wrapped for deployment, e.g. by ``deployable``) to ``out``."""
        return export_onnx(module, self.example(), out).path

    def val_split(self) -> str:
        """The name val figures are reported under, e.g. ``"digits val"``."""
        return f"{self.fitted_splits().val.name} val"

    def val_score(self, module: nn.Module) -> float | None:
        """Accuracy (classifiers) or ROC-AUC (anomaly scorers) on the val split."""
        metrics = evaluate(module, self.fitted_splits().val)
        return metrics.roc_auc if metrics.task is Task.ANOMALY else metrics.accuracy

    def variant(
        self,
        source: ModelSource,
        out: Path,
        *,
        checkpoint: Path | None,
        settings: Mapping[str, Any],
        extra: Mapping[str, Any],
        notes: tuple[str, ...] = (),
        packages: tuple[str, ...] = (),
    ) -> Variant:
        """The :class:`Variant` of ``out``, its parity measured against ``source.onnx``."""
        return Variant(
            method=self.name,
            path=out,
            settings={**self.get_params(), **settings},
            tools=tool_versions(*packages),
            parity=self.measure_parity(source.onnx, out),
            parent=source.onnx,
            checkpoint=checkpoint,
            notes=notes,
            extra=dict(extra),
        )


def fine_tune_or_keep(
    optimizer: FineTuneOptimizer, module: nn.Module, arch: ArchConfig, config: FitConfig | None
) -> dict[str, Any]:
    """Fine-tune when ``config`` is given; return what to record about it (epochs run, ...)."""
    if config is None:
        return {"fine_tune_epochs_run": 0}
    result = optimizer.train(module, arch, config)
    return {
        "fine_tune_epochs_run": result.epochs_run,
        "fine_tune_best_epoch": result.best_epoch,
        "fine_tune_seconds": result.train_seconds,
    }
