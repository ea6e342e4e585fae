"""Model performance on the stream: windowed accuracy and macro-F1 from labels, and accuracy
estimated without labels.

Labels arrive late and not for every sample; the node keeps the last ``window`` (predicted,
true) pairs. Without labels, accuracy is estimated by Average Thresholded Confidence (ATC;
Garg et al., "Leveraging unlabeled data to predict out-of-distribution performance", ICLR
2022): on labelled reference data pick the threshold ``t`` such that the share of confidences
above ``t`` equals the accuracy; on the stream the estimate is the share of recent confidences
above ``t``. Memory is bounded by ``window`` whatever the label rate (a flood of labels only
overwrites the ring).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edgeloop.core.errors import DataError
from edgeloop.monitoring.outputs import check_class
from edgeloop.monitoring.statistic import F64


def atc_threshold(confidence: F64, correct: npt.NDArray[np.bool_]) -> float:
    """ATC's threshold: the share of ``confidence`` above it equals the share ``correct``.

    Raises:
        DataError: empty or mismatched inputs.
    """
    if confidence.shape != correct.shape or confidence.size == 0:
        raise DataError(
            f"ATC needs one confidence per correctness flag (got {confidence.shape} and "
            f"{correct.shape})"
        )
    accuracy = float(correct.mean())
    # The (1 - accuracy) quantile leaves a share `accuracy` of the confidences above it.
    return float(np.quantile(confidence, 1.0 - accuracy))


@dataclass(frozen=True, slots=True)
class PerformanceReport:
    """Windowed performance; a figure is ``None`` when nothing has been seen to compute it."""

    labelled: int
    accuracy: float | None
    macro_f1: float | None
    estimated_accuracy: float | None
    window: int

    def __post_init__(self) -> None:
        for name in ("accuracy", "macro_f1", "estimated_accuracy"):
            v = getattr(self, name)
            if v is not None and not (math.isfinite(v) and 0.0 <= v <= 1.0):
                raise DataError(f"{name}={v}, expected a share in [0, 1] or None")


class Ring:
    """The last ``size`` values of an integer or float stream, preallocated."""

    def __init__(self, size: int, dtype: type[np.generic]) -> None:
        self.values = np.zeros(size, dtype=dtype)
        self.count = 0

    def push(self, value: float) -> None:
        self.values[self.count % self.values.size] = value
        self.count += 1

    def view(self) -> npt.NDArray[np.generic]:
        return self.values[: min(self.count, self.values.size)]

    def clear(self) -> None:
        self.count = 0


class PerformanceTracker:
    """Labels and confidences of the last ``window`` samples of a ``classes``-class model."""

    def __init__(self, classes: int, window: int, atc: float | None) -> None:
        self.classes = classes
        self.window = window
        self.atc = atc
        self._pred = Ring(window, np.int64)
        self._true = Ring(window, np.int64)
        self._conf = Ring(window, np.float64)  # confidences, read as floats below

    def add_label(self, predicted: int, label: int) -> None:
        """Record the true ``label`` of a sample the model answered ``predicted``.

        Raises:
            DataError: a class index the model does not have.
        """
        p = check_class(predicted, self.classes, "predicted class")
        t = check_class(label, self.classes, "label")
        self._pred.push(p)
        self._true.push(t)

    def add_confidence(self, confidence: float) -> None:
        self._conf.push(confidence)

    def reset(self) -> None:
        for ring in (self._pred, self._true, self._conf):
            ring.clear()

    @property
    def nbytes(self) -> int:
        return sum(r.values.nbytes for r in (self._pred, self._true, self._conf))

    def report(self) -> PerformanceReport:
        pred, true = self._pred.view(), self._true.view()
        conf = self._conf.view().astype(np.float64)
        estimate = None
        if self.atc is not None and conf.size:
            estimate = float((conf > self.atc).mean())
        return PerformanceReport(
            labelled=self._true.count,
            accuracy=float((pred == true).mean()) if true.size else None,
            macro_f1=macro_f1(pred, true) if true.size else None,
            estimated_accuracy=estimate,
            window=self.window,
        )


def macro_f1(predicted: npt.NDArray[np.generic], true: npt.NDArray[np.generic]) -> float:
    """Unweighted mean F1 over the classes present in ``predicted`` or ``true``."""
    classes = np.union1d(predicted, true)
    scores = []
    for c in classes:  # at most the model's classes, over a bounded window
        tp = float(np.sum((predicted == c) & (true == c)))
        fp = float(np.sum((predicted == c) & (true != c)))
        fn = float(np.sum((predicted != c) & (true == c)))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return float(np.mean(scores))
