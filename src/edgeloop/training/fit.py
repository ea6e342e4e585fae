"""``fit``: train a zoo architecture on a data set's splits, with early stopping on the val loss.

Classifiers minimise cross-entropy; the autoencoder minimises the MSE of reconstructing the
*normal* training samples only (labels 0), so a high reconstruction error flags an anomaly.
The test split is used once, after training, for the reported metrics.

Determinism: the weights' initialisation, dropout and shuffling are driven by ``seed`` alone
(``torch.manual_seed`` inside a forked RNG state, a numpy ``Generator`` for the batch order,
``torch.use_deterministic_algorithms``), so two fits with the same seed, data and thread count
give identical weights. The caller's global RNG state is left untouched.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from edgeloop.core.errors import ConfigError, DataError
from edgeloop.data.dataset import Dataset, Splits, Task
from edgeloop.training.metrics import (
    anomaly_metrics,
    anomaly_scores,
    evaluate,
    predict_logits,
)
from edgeloop.training.result import EpochRecord, TrainResult
from edgeloop.training.zoo import ArchConfig, build

__all__ = ["EpochRecord", "FitConfig", "Optimizer", "TrainResult", "fit"]


class Optimizer(StrEnum):
    ADAM = "adam"
    SGD = "sgd"


def _positive_int(name: str, value: int, least: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigError(f"{name} {value!r} is not valid; expected an integer >= {least}")


@dataclass(frozen=True, slots=True)
class FitConfig:
    """Training hyper-parameters.

    Training stops after ``patience`` epochs in a row whose val loss did not drop below the best
    so far by more than ``min_delta``; the best epoch's weights are restored.

    Raises:
        ConfigError: a value out of range or an unknown optimizer.
    """

    epochs: int = 30
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    patience: int = 5
    seed: int = 0
    optimizer: Optimizer = Optimizer.ADAM
    momentum: float = 0.9
    min_delta: float = 0.0

    def __post_init__(self) -> None:
        _positive_int("epochs", self.epochs)
        _positive_int("batch_size", self.batch_size)
        _positive_int("patience", self.patience)
        _positive_int("seed", self.seed, least=0)
        if not (math.isfinite(self.lr) and 0.0 < self.lr <= 10.0):
            raise ConfigError(
                f"learning rate {self.lr} is not valid; expected 0 < lr <= 10",
                hint="typical values: 1e-3..1e-2 for adam, 1e-2..1e-1 for sgd",
            )
        for name in ("weight_decay", "min_delta"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0.0):
                raise ConfigError(f"{name} {value} is not valid; expected a finite value >= 0")
        if not (math.isfinite(self.momentum) and 0.0 <= self.momentum < 1.0):
            raise ConfigError(f"momentum {self.momentum} is not valid; expected 0 <= momentum < 1")
        given: object = self.optimizer
        if not isinstance(given, Optimizer):
            try:  # accept the plain name from JSON or a CLI flag
                object.__setattr__(self, "optimizer", Optimizer(str(given)))
            except ValueError:
                known = ", ".join(o.value for o in Optimizer)
                raise ConfigError(
                    f"optimizer {given!r} is not known; expected one of {known}"
                ) from None

    def to_dict(self) -> dict[str, Any]:
        return {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "patience": self.patience,
            "seed": self.seed,
            "optimizer": self.optimizer.value,
            "momentum": self.momentum,
            "min_delta": self.min_delta,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FitConfig:
        """Rebuild from :meth:`to_dict` output; missing keys take the defaults.

        Raises ConfigError for an unknown key or a bad value."""
        known = cls().to_dict()
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ConfigError(
                f"fit config keys {unknown} are not known; expected some of {', '.join(known)}"
            )
        try:
            return cls(**dict(d))
        except TypeError as exc:
            raise ConfigError(f"fit config {dict(d)!r} is not valid: {exc}") from exc


def _check_splits(arch: ArchConfig, splits: Splits) -> None:
    for ds in (splits.train, splits.val, splits.test):
        if ds.sample_shape != arch.input_shape:
            raise ConfigError(
                f"split {ds.name!r} has samples of shape {ds.sample_shape}; arch {arch.arch!r} "
                f"was configured for {arch.input_shape}",
                hint="build the ArchConfig with input_shape=dataset.sample_shape",
            )
        if len(ds) == 0:
            raise DataError(f"split {ds.name!r} is empty", hint="use a larger data set or split")
        bad = int(np.count_nonzero(~np.isfinite(ds.x)))
        if bad:
            raise DataError(
                f"split {ds.name!r} holds {bad} NaN or infinite values; training needs finite x",
                hint="clean the data first (edgeloop.data.clean imputes missing values)",
            )
    if arch.task is Task.ANOMALY and splits.train.task is not Task.ANOMALY:
        raise ConfigError(
            f"arch {arch.arch!r} learns anomaly scores but data set {splits.train.name!r} is a "
            f"{splits.train.task.value} task",
            hint="pick a classifier arch (mlp, cnn, ds-cnn, cnn1d) for classification data",
        )
    if arch.task is Task.CLASSIFICATION and splits.train.num_classes != arch.num_classes:
        raise ConfigError(
            f"data set {splits.train.name!r} has {splits.train.num_classes} classes; arch "
            f"config says num_classes={arch.num_classes}",
            hint="build the ArchConfig with num_classes=dataset.num_classes",
        )


def _train_tensors(arch: ArchConfig, train: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = train.x, train.y
    if arch.task is Task.ANOMALY:
        x, y = x[y == 0], y[y == 0]  # the autoencoder learns what normal looks like, only
    if len(x) < 2:
        raise DataError(
            f"split {train.name!r} has {len(x)} usable training samples; need >= 2",
            hint="anomaly training uses normal (label 0) samples only"
            if arch.task is Task.ANOMALY
            else None,
        )
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    return xt, torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))


def _batches(n: int, batch_size: int, rng: np.random.Generator) -> Iterator[torch.Tensor]:
    order = torch.from_numpy(rng.permutation(n))
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        # BatchNorm cannot normalise a batch of one sample in train mode; skip such a remainder
        # (the order is reshuffled every epoch, so no sample is left out for good).
        if len(idx) > 1 or n == 1:
            yield idx


def _optimizer(module: nn.Module, config: FitConfig) -> torch.optim.Optimizer:
    params = module.parameters()
    if config.optimizer is Optimizer.SGD:
        return torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


def _train_epoch(
    module: nn.Module,
    opt: torch.optim.Optimizer,
    data: tuple[torch.Tensor, torch.Tensor],
    reconstruct: bool,
    config: FitConfig,
    rng: np.random.Generator,
) -> float:
    xt, yt = data
    module.train()
    total, seen = 0.0, 0
    for idx in _batches(len(xt), config.batch_size, rng):
        xb = xt[idx]
        out = module(xb)
        if reconstruct:
            loss = nn.functional.mse_loss(out, xb)
        else:
            loss = nn.functional.cross_entropy(out, yt[idx])
        opt.zero_grad(set_to_none=True)
        torch.autograd.backward(loss)
        opt.step()
        total += float(loss.item()) * len(idx)
        seen += len(idx)
    return total / seen


def _validate(module: nn.Module, arch: ArchConfig, val: Dataset) -> tuple[float, float | None]:
    """Val loss (the early-stopping signal) and the val metric, from one pass over ``val``."""
    if arch.task is Task.ANOMALY:
        scores = anomaly_scores(module, val.x)
        normal = scores[val.y == 0]
        if len(normal) == 0:
            raise DataError(
                f"split {val.name!r} has no normal (label 0) samples to compute the val loss on",
                hint="split the data stratified so every split holds normal samples",
            )
        # Every sample has the same size, so the mean of per-sample MSEs is the batch MSE.
        return float(normal.mean()), anomaly_metrics(val.y, scores, val.name).roc_auc
    logits = torch.from_numpy(predict_logits(module, val.x))
    loss = nn.functional.cross_entropy(logits, torch.from_numpy(val.y.astype(np.int64)))
    accuracy = float((logits.argmax(dim=1).numpy() == val.y).mean())
    return float(loss.item()), accuracy


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=not enabled,
    )


def fit(
    arch: ArchConfig,
    splits: Splits,
    config: FitConfig,
    *,
    progress: bool = True,
    module: nn.Module | None = None,
) -> TrainResult:
    """Train ``build(arch)`` (or the given ``module``, e.g. to fine-tune) on ``splits.train``.

    Early-stops on ``splits.val``, restores the best epoch's weights, then measures
    ``splits.test`` once. A rich progress bar goes to stderr unless ``progress`` is False.

    Raises:
        ConfigError: arch and data disagree (sample shape, classes, task), or the loss diverged.
        DataError: an empty split, < 2 usable training samples, no normal val samples.
    """
    _check_splits(arch, splits)
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        torch.use_deterministic_algorithms(True)
        try:
            net = build(arch) if module is None else module
            return _run(net, arch, splits, config, progress)
        finally:
            torch.use_deterministic_algorithms(was_deterministic)


def _run(
    net: nn.Module, arch: ArchConfig, splits: Splits, config: FitConfig, progress: bool
) -> TrainResult:
    data = _train_tensors(arch, splits.train)
    opt = _optimizer(net, config)
    rng = np.random.default_rng(config.seed)
    reconstruct = arch.task is Task.ANOMALY
    history: list[EpochRecord] = []
    best_loss, best_state, best_epoch, stale = math.inf, _snapshot(net), 0, 0
    start = time.perf_counter()
    with _progress(progress) as bar:
        task = bar.add_task(f"train {arch.arch}", total=config.epochs, status="")
        for epoch in range(1, config.epochs + 1):
            t0 = time.perf_counter()
            train_loss = _train_epoch(net, opt, data, reconstruct, config, rng)
            val_loss, val_metric = _validate(net, arch, splits.val)
            record = EpochRecord(epoch, train_loss, val_loss, val_metric, time.perf_counter() - t0)
            history.append(record)
            _check_finite(record, config)
            if val_loss < best_loss - config.min_delta:
                best_loss, best_state, best_epoch, stale = val_loss, _snapshot(net), epoch, 0
            else:
                stale += 1
            bar.update(task, advance=1, status=_status(record))
            if stale >= config.patience:
                break
    net.load_state_dict(best_state)
    net.eval()
    seconds = time.perf_counter() - start
    return TrainResult(
        module=net,
        arch=arch,
        config=config,
        history=tuple(history),
        best_epoch=best_epoch,
        stopped_early=len(history) < config.epochs,
        test_metrics=evaluate(net, splits.test),
        train_seconds=seconds,
        threads=torch.get_num_threads(),
        train_samples=len(data[0]),
    )


def _snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _check_finite(record: EpochRecord, config: FitConfig) -> None:
    if not (math.isfinite(record.train_loss) and math.isfinite(record.val_loss)):
        raise ConfigError(
            f"training diverged at epoch {record.epoch}: train loss {record.train_loss}, "
            f"val loss {record.val_loss} with lr {config.lr}",
            hint="lower the learning rate (--lr) or check the data for NaN / huge values",
        )


def _status(r: EpochRecord) -> str:
    metric = "" if r.val_metric is None else f" val_metric {r.val_metric:.4f}"
    return f"loss {r.train_loss:.4f} val_loss {r.val_loss:.4f}{metric}"
