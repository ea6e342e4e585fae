"""Class labels as users write them (``"cat"``, ``3``, ``"7.0"``) -> integer labels + class names.

Every loader reads labels through :func:`parse_label` (one rule for what a label may be) and
maps them with :func:`encode_labels` (one rule for the order of the classes), so the same labels
give the same ``y`` and ``classes`` whatever file format they came in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from edgeloop.core.errors import DataError

Label = int | str


def parse_label(value: object, where: str) -> Label:
    """One raw label (a CSV cell, a JSON value, an array item) -> an ``int`` or a class name.

    ``where`` names the place (``file:line``) for the error message. Integral numbers (``3``,
    ``"3"``, ``3.0``) are ints; other text is a class name.

    Raises:
        DataError: the label is missing (empty, null), NaN, a non-integral number or not a
            scalar.
    """
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return _from_float(float(value), where, repr(value))
    if not isinstance(value, str):
        raise DataError(
            f"{where}: label {value!r} is a {type(value).__name__}; expected a class name or an "
            "integer",
            hint="write one scalar label per sample",
        )
    text = value.strip()
    if not text:
        raise DataError(f"{where}: the label is missing", hint="give every sample a label")
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return text
    return _from_float(number, where, repr(text))


def _from_float(number: float, where: str, shown: str) -> int:
    if math.isnan(number):
        raise DataError(
            f"{where}: label {shown} is NaN", hint="label the sample or drop it from the file"
        )
    if not math.isfinite(number) or not number.is_integer():
        raise DataError(
            f"{where}: label {shown} is not a class; expected an integer or a class name",
            hint="labels name classes; regression targets are not supported",
        )
    return int(number)


def encode_labels(raw: Sequence[Label]) -> tuple[npt.NDArray[np.int64], tuple[str, ...]]:
    """Map labels to ``0..k-1`` over the sorted distinct values.

    All-integer labels sort numerically (``2 < 10``) and keep their value as the class name;
    if any label is text, every label is treated as text and sorted as text.
    """
    values: list[Label] = list(raw)
    if not all(isinstance(v, int) for v in values):
        values = [str(v) for v in values]
    distinct = sorted(set(values), key=lambda v: (isinstance(v, str), v))
    index = {v: i for i, v in enumerate(distinct)}
    y = np.fromiter((index[v] for v in values), dtype=np.int64, count=len(values))
    return y, tuple(str(v) for v in distinct)
