"""The model's outputs as the monitor reads them: probabilities, labels and their features.

Prediction drift watches the one-hot predicted class (its EWMA is the recent class mix);
confidence drift watches the top-class probability.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from edgeloop.core.errors import DataError
from edgeloop.monitoring.statistic import F64

# Rows of probabilities may miss 1 by float32 rounding of a softmax.
SUM_TOLERANCE = 1e-3
# A quantized softmax (a static-int8 model's uint8 output, step 1/255) misses 1 by up to half a
# step per class: 10 classes summed to 0.992-0.996 on digits-cnn-edge.
QUANT_STEP = 1.0 / 255.0


def distributions(rows: npt.ArrayLike) -> tuple[F64, npt.NDArray[np.bool_]]:
    """Rows of model outputs as float64 ``(n, classes)``, each row that is a distribution
    (values in [0, 1], summing to 1 within ``SUM_TOLERANCE`` or, for a quantized output, within
    half a ``QUANT_STEP`` per class) divided by its sum; and which rows were.

    Other rows (logits) are returned as they are: the caller decides (a softmax, or none).
    """
    x = np.asarray(rows, dtype=np.float64)
    x = x.reshape(x.shape[0], -1)
    tolerance = max(SUM_TOLERANCE, 0.5 * QUANT_STEP * x.shape[1])
    sums = x.sum(axis=1)
    ok = (x.min(axis=1) >= 0) & (x.max(axis=1) <= 1) & (np.abs(sums - 1.0) <= tolerance)
    ok &= sums > 0
    out = np.where(ok[:, None], x / np.where(ok, sums, 1.0)[:, None], x)
    return out, ok


def as_probabilities(outputs: npt.ArrayLike, *, rows: int | None) -> F64:
    """Outputs as float64 ``(rows, classes)`` probabilities, or a ``DataError``.

    ``rows=None`` accepts any number of rows.
    """
    try:
        p = np.asarray(outputs, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"the model outputs are not a numeric array ({exc})") from exc
    if p.ndim != 2 or p.shape[1] < 2 or (rows is not None and p.shape[0] != rows):
        want = f"({rows if rows is not None else 'n'}, classes >= 2)"
        raise DataError(f"model outputs of shape {p.shape}; expected {want}")
    if not np.isfinite(p).all():
        raise DataError("the model outputs hold NaN/inf values")
    if (p < 0).any() or (np.abs(p.sum(axis=1) - 1.0) > SUM_TOLERANCE).any():
        raise DataError(
            "the model outputs are not probabilities (each row >= 0 and summing to 1)",
            hint="pass softmax probabilities, not logits",
        )
    return p


def as_labels(labels: npt.ArrayLike, *, rows: int, classes: int) -> npt.NDArray[np.int64]:
    """Labels as int64 ``(rows,)`` class indices in ``[0, classes)``, or a ``DataError``."""
    y = np.asarray(labels)
    if y.shape != (rows,) or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"labels of shape {y.shape} and dtype {y.dtype}; expected ({rows},) ints")
    bad = (y < 0) | (y >= classes)
    if bad.any():
        raise DataError(
            f"label {int(y[bad][0])} is not a class of the model (it has {classes}: "
            f"0..{classes - 1})",
            hint="labels are class indices in the model's output order",
        )
    return y.astype(np.int64)


def check_class(value: int, classes: int, what: str) -> int:
    """``value`` as a class index of a model with ``classes`` outputs, or a ``DataError``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise DataError(f"{what} {value!r} is not a class index (an int)")
    if not 0 <= int(value) < classes:
        raise DataError(
            f"{what} {int(value)} is not a class of the model (it has {classes}: 0..{classes - 1})",
            hint="labels are class indices in the model's output order",
        )
    return int(value)


def output_rows(probs: F64) -> tuple[F64, F64]:
    """Probabilities ``(m, classes)`` -> one-hot predictions and confidences ``(m, 1)``."""
    onehot = np.zeros_like(probs)
    onehot[np.arange(probs.shape[0]), probs.argmax(axis=1)] = 1.0
    return onehot, probs.max(axis=1, keepdims=True)
