"""How a model's outputs on a labelled data set become a quality figure (pure numpy, no I/O).

- Classification: accuracy = share of samples whose arg-max output is the label.
- Anomaly detection (``Task.ANOMALY``, labels 0 = normal / 1 = anomaly): accuracy needs a
  decision threshold the model does not carry, so the threshold-free ROC-AUC is reported
  instead, computed from the anomaly score as the Mann-Whitney U statistic
  (Hanley & McNeil 1982). The score is the model's single output per sample, the difference
  of its two class scores (class 1 minus class 0), or — for an autoencoder whose output has the
  input's shape — the per-sample mean squared reconstruction error.

A figure that cannot be computed is None with the reason in :attr:`Score.note`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from edgeloop.core.errors import ConfigError
from edgeloop.data.dataset import Task


@dataclass(frozen=True, slots=True)
class Score:
    """Accuracy and/or ROC-AUC on ``split``; ``note`` says why a figure is None."""

    accuracy: float | None
    roc_auc: float | None
    split: str
    note: str | None = None

    def __post_init__(self) -> None:
        for name, value in (("accuracy", self.accuracy), ("roc_auc", self.roc_auc)):
            if value is not None and not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} {value} is outside [0, 1]")

    def to_dict(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "roc_auc": self.roc_auc,
            "split": self.split,
            "note": self.note,
        }


def accuracy(logits: npt.NDArray[Any], labels: npt.NDArray[np.int64]) -> float:
    """Share of rows whose arg-max column equals the label."""
    return float(np.mean(np.argmax(logits, axis=1) == labels))


def roc_auc(scores: npt.NDArray[Any], labels: npt.NDArray[np.int64]) -> float:
    """Area under the ROC curve of ``scores`` for ``labels == 1``; ties count one half.

    Raises:
        ConfigError: the labels do not hold both classes (the area is undefined).
    """
    positive = labels == 1
    n_pos = int(positive.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ConfigError(
            f"ROC-AUC needs normal and anomalous samples; got {n_pos} anomalous, {n_neg} normal"
        )
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    # 1-based mid-rank of each tie group: its last rank minus half the group's extra members.
    ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]
    u = float(ranks[positive].sum()) - n_pos * (n_pos + 1) / 2.0
    return u / (n_pos * n_neg)


def score_outputs(
    outputs: npt.NDArray[Any],
    x: npt.NDArray[Any],
    labels: npt.NDArray[np.int64],
    task: Task,
    num_classes: int,
    split: str,
) -> Score:
    """Score a model's first output on every sample of a data set (``x`` are its inputs)."""
    if task is Task.ANOMALY:
        return _score_anomaly(outputs, x, labels, split)
    if outputs.ndim != 2 or outputs.shape[1] != num_classes:
        return Score(
            None,
            None,
            split,
            f"model output shape {list(outputs.shape)} is not (samples, {num_classes}) for "
            f"the {num_classes} classes of the data set",
        )
    return Score(accuracy(outputs, labels), None, split)


def anomaly_scores(
    outputs: npt.NDArray[Any], x: npt.NDArray[Any]
) -> npt.NDArray[np.float64] | None:
    """One anomaly score per sample from a model's output on inputs ``x``, or None."""
    out = outputs.astype(np.float64)
    if out.shape == x.shape:
        # An autoencoder's reconstruction: the score is its mean squared error per sample.
        return np.asarray(((out - x) ** 2).reshape(len(out), -1).mean(axis=1), dtype=np.float64)
    if out.ndim == 1 or (out.ndim == 2 and out.shape[1] == 1):
        return out.reshape(len(out))
    if out.ndim == 2 and out.shape[1] == 2:
        return out[:, 1] - out[:, 0]
    return None


def _score_anomaly(
    outputs: npt.NDArray[Any], x: npt.NDArray[Any], labels: npt.NDArray[np.int64], split: str
) -> Score:
    scores = anomaly_scores(outputs, x)
    if scores is None:
        return Score(
            None,
            None,
            split,
            f"anomaly data set, but model output shape {list(outputs.shape)} is neither one "
            "score per sample, two class scores, nor a reconstruction of the input",
        )
    try:
        auc = roc_auc(scores, labels)
    except ConfigError as exc:
        return Score(None, None, split, exc.message)
    return Score(
        None,
        auc,
        split,
        "anomaly data set: accuracy needs a decision threshold the "
        "model does not carry; ROC-AUC is reported instead",
    )
