"""Held-out metrics: accuracy and macro-F1 for classifiers, ROC-AUC for anomaly scorers.

Every figure is computed from the module's outputs on a named split; a figure that cannot be
computed on that split (ROC-AUC with one class present, accuracy of a score without a
threshold) is ``None`` and ``note`` says why.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from edgeloop.core.errors import ConfigError, DataError
from edgeloop.data.dataset import Dataset, Task
from edgeloop.training.nets import AnomalyScorer, Autoencoder


@dataclass(frozen=True, slots=True)
class Metrics:
    """What a module scored on ``samples`` samples of the split named ``split``.

    ``task`` says which figures apply: accuracy and macro_f1 for classification, roc_auc for
    anomaly scores. ``note`` gives the reason for a figure that is None.

    Raises:
        ConfigError: a figure outside [0, 1] or fewer than one sample.
    """

    split: str
    samples: int
    task: Task
    accuracy: float | None = None
    macro_f1: float | None = None
    roc_auc: float | None = None
    note: str | None = None

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise ConfigError(
                f"metrics of split {self.split!r} need >= 1 sample; got {self.samples}"
            )
        for name in ("accuracy", "macro_f1", "roc_auc"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise ConfigError(f"{name} {value} of split {self.split!r} is outside [0, 1]")

    def to_dict(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "samples": self.samples,
            "task": self.task.value,
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "roc_auc": self.roc_auc,
            "note": self.note,
        }

    def to_dict_floats(self) -> dict[str, float]:
        """The figures that were measured, by name (``accuracy``, ``macro_f1``, ``roc_auc``,
        ``samples``), for a manifest's ``metrics``; a None figure is left out."""
        figures = {"accuracy": self.accuracy, "macro_f1": self.macro_f1, "roc_auc": self.roc_auc}
        out = {k: v for k, v in figures.items() if v is not None}
        out["samples"] = float(self.samples)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Metrics:
        """Rebuild from :meth:`to_dict` output; raises ConfigError on missing or bad keys."""

        def opt(key: str) -> float | None:
            return None if d.get(key) is None else float(d[key])

        try:
            return cls(
                split=str(d["split"]),
                samples=int(d["samples"]),
                task=Task(d["task"]),
                accuracy=opt("accuracy"),
                macro_f1=opt("macro_f1"),
                roc_auc=opt("roc_auc"),
                note=None if d.get("note") is None else str(d["note"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"metrics {dict(d)!r} are not valid: {exc!r}") from exc


def predict_logits(
    module: nn.Module, x: npt.NDArray[np.float32], batch_size: int = 256
) -> npt.NDArray[np.float32]:
    """The module's raw outputs on ``x`` in eval mode, batch by batch, without gradients.

    The module's train/eval mode is restored afterwards. Raises ConfigError for batch_size < 1.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size {batch_size} is not valid; expected >= 1")
    was_training = module.training
    module.eval()
    outs: list[npt.NDArray[np.float32]] = []
    try:
        with torch.no_grad():
            xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
            for start in range(0, len(xt), batch_size):
                outs.append(module(xt[start : start + batch_size]).numpy())
    finally:
        module.train(was_training)
    if not outs:
        raise DataError("cannot predict on 0 samples", hint="pass at least one sample")
    return np.concatenate(outs).astype(np.float32, copy=False)


def anomaly_scores(
    module: nn.Module, x: npt.NDArray[np.float32], batch_size: int = 256
) -> npt.NDArray[np.float32]:
    """Per-sample anomaly scores, shape (N,): reconstruction MSE for an Autoencoder, else the
    module's own (N,) or (N, 1) output. Raises ConfigError for any other output shape."""
    scorer = AnomalyScorer(module) if isinstance(module, Autoencoder) else module
    out = predict_logits(scorer, x, batch_size)
    if out.ndim == 1 or (out.ndim == 2 and out.shape[1] == 1):
        return out.reshape(-1)
    raise ConfigError(
        f"{type(module).__name__} outputs shape {out.shape}; an anomaly score is (N,) or (N, 1)",
        hint="pass the autoencoder or deployable(module, config)",
    )


def classification_metrics(
    y: npt.NDArray[np.int64], pred: npt.NDArray[np.int64], num_classes: int, split: str
) -> Metrics:
    """Accuracy and macro-F1 from the confusion matrix.

    Macro-F1 averages per-class F1 = 2TP / (2TP + FP + FN) over the classes present in ``y``
    or ``pred`` (a class absent from both has no defined F1), as sklearn's f1_score does.
    """
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (y, pred), 1)
    tp = np.diag(cm).astype(np.float64)
    fp, fn = cm.sum(axis=0) - tp, cm.sum(axis=1) - tp
    seen = (cm.sum(axis=0) + cm.sum(axis=1)) > 0
    f1 = 2 * tp[seen] / (2 * tp[seen] + fp[seen] + fn[seen])
    return Metrics(
        split=split,
        samples=len(y),
        task=Task.CLASSIFICATION,
        accuracy=float(tp.sum() / len(y)),
        macro_f1=float(f1.mean()),
    )


def anomaly_metrics(
    y: npt.NDArray[np.int64], scores: npt.NDArray[np.float32], split: str
) -> Metrics:
    """ROC-AUC of ``scores`` against labels (1 = anomaly), or None when one class is missing."""
    from sklearn.metrics import roc_auc_score

    present = set(np.unique(y).tolist())
    if present != {0, 1}:
        return Metrics(
            split=split,
            samples=len(y),
            task=Task.ANOMALY,
            note=f"ROC-AUC needs normal (0) and anomaly (1) samples; split {split!r} has "
            f"labels {sorted(present)}",
        )
    return Metrics(
        split=split,
        samples=len(y),
        task=Task.ANOMALY,
        roc_auc=float(roc_auc_score(y, scores)),
        note="accuracy and macro-F1 need a threshold on the anomaly score",
    )


def evaluate(module: nn.Module, ds: Dataset, *, batch_size: int = 256) -> Metrics:
    """Score ``module`` on all of ``ds``; the split is named by ``ds.name``.

    An Autoencoder or a module answering (N,) / (N, 1) scores is rated by ROC-AUC; a module
    answering (N, C) logits or probabilities by accuracy and macro-F1.

    Raises:
        DataError: ``ds`` is empty.
        ConfigError: the output does not fit the data (C != ds.num_classes, other shapes).
    """
    if len(ds) == 0:
        raise DataError(f"split {ds.name!r} has no samples to evaluate on")
    if isinstance(module, Autoencoder):
        return anomaly_metrics(ds.y, anomaly_scores(module, ds.x, batch_size), ds.name)
    out = predict_logits(module, ds.x, batch_size)
    if out.ndim == 1 or (out.ndim == 2 and out.shape[1] == 1):
        return anomaly_metrics(ds.y, out.reshape(-1), ds.name)
    if out.ndim != 2 or out.shape[1] != ds.num_classes:
        raise ConfigError(
            f"{type(module).__name__} outputs shape {out.shape}; data set {ds.name!r} needs "
            f"(N, {ds.num_classes}) class scores",
            hint="train the model on this data set's classes",
        )
    pred = out.argmax(axis=1).astype(np.int64)
    return classification_metrics(ds.y, pred, ds.num_classes, ds.name)
