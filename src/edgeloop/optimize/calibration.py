"""Calibration data for static quantization, fed from a ``Dataset`` to ONNX Runtime.

Static INT8 fixes each activation's scale from the ranges it sees on calibration samples. They
come from the *train* split only (:func:`calibration_samples`): the test split measures the
result, so it must not shape it. ONNX Runtime asks for inputs through a
``CalibrationDataReader`` -- any object with ``get_next()`` returning one feed dict or None when
done; :class:`DatasetCalibrationReader` is that object.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edgeloop.core.errors import ConfigError, DataError
from edgeloop.core.types import TensorSpec, shape_str
from edgeloop.data.dataset import Dataset
from edgeloop.formats.onnx_info import inspect_onnx

F32 = npt.NDArray[np.float32]
# Samples per calibration run when the model's batch axis is free: fewer session runs,
# bounded memory for the activations ORT keeps per run.
DEFAULT_BATCH = 16


def calibration_samples(train: Dataset, count: int) -> F32:
    """``count`` samples of ``train`` spread evenly over it (deterministic, no random draw).

    Evenly spaced indices cover every part of a split that is ordered (by class, by time)
    without a seed; with ``count >= len(train)`` all samples are used.

    Raises:
        ConfigError: ``count`` < 1.
        DataError: ``train`` is empty.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ConfigError(f"calibration sample count {count!r} is not valid; expected an int >= 1")
    if len(train) == 0:
        raise DataError(
            f"data set {train.name!r}: the train split is empty; calibration needs samples",
            hint="use a larger data set or a smaller --test/--val fraction",
        )
    if count >= len(train):
        return np.ascontiguousarray(train.x, dtype=np.float32)
    index = np.linspace(0, len(train) - 1, num=count).round().astype(np.int64)
    return np.ascontiguousarray(train.x[index], dtype=np.float32)


def check_sample_shape(spec: TensorSpec, sample_shape: tuple[int, ...], model: str) -> None:
    """Raise DataError unless samples of ``sample_shape`` fit input ``spec`` (batch axis first).

    Raises:
        DataError: naming both shapes.
    """
    expected = spec.shape[1:]
    fits = len(expected) == len(sample_shape) and all(
        e is None or e == g for e, g in zip(expected, sample_shape, strict=True)
    )
    if not fits:
        raise DataError(
            f"calibration samples have shape {shape_str(sample_shape)}, but model {model} input "
            f"{spec.name!r} expects {shape_str(spec.shape)} (batch axis first)",
            hint="calibrate with the data set the model was trained on",
        )


class DatasetCalibrationReader:
    """Feeds ``x`` to ONNX Runtime's calibrator in batches of ``batch_size`` as ``{name: batch}``.

    ``rewind()`` starts over (calibrators that make several passes call it).
    """

    def __init__(self, x: F32, input_name: str, batch_size: int = DEFAULT_BATCH) -> None:
        if x.ndim < 2 or len(x) == 0:
            raise DataError(f"calibration samples have shape {x.shape}; expected (n >= 1, ...)")
        if batch_size < 1:
            raise ConfigError(f"calibration batch size {batch_size} is not valid; expected >= 1")
        self.x = np.ascontiguousarray(x, dtype=np.float32)
        self.input_name = input_name
        self.batch_size = batch_size
        self._next = 0

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def get_next(self) -> dict[str, F32] | None:
        if self._next >= len(self.x):
            return None
        batch = self.x[self._next : self._next + self.batch_size]
        self._next += self.batch_size
        return {self.input_name: batch}

    def rewind(self) -> None:
        self._next = 0


def reader_for(model: Path, x: F32) -> DatasetCalibrationReader:
    """A reader feeding ``x`` to ``model``'s single float input, shapes checked first.

    Raises:
        ConfigError: the model has several inputs or a non-float input.
        DataError: the samples' shape does not fit the input (both shapes named).
        NotFoundError, UntrustedArtifactError: as :func:`edgeloop.formats.inspect_onnx`.
    """
    info = inspect_onnx(model)
    if len(info.inputs) != 1:
        names = ", ".join(s.name for s in info.inputs)
        raise ConfigError(
            f"model {model.name} has {len(info.inputs)} inputs ({names}); calibration from a "
            "data set feeds exactly one",
            hint="quantize it with dynamic-int8, which needs no calibration data",
        )
    spec = info.inputs[0]
    if spec.dtype != "float32":
        raise ConfigError(
            f"model {model.name} input {spec.name!r} is {spec.dtype}; static quantization "
            "calibrates float32 inputs",
            hint="dynamic-int8 and fp16 do not need float32 inputs",
        )
    check_sample_shape(spec, tuple(int(d) for d in x.shape[1:]), model.name)
    first = spec.shape[0] if spec.shape else None
    if first is None:
        return DatasetCalibrationReader(x, spec.name, DEFAULT_BATCH)
    # A fixed batch axis takes only whole batches: drop the remainder.
    whole = len(x) // first * first
    if whole == 0:
        raise DataError(
            f"model {model.name} has a fixed batch of {first}, more than the {len(x)} "
            "calibration samples",
            hint="calibrate with more samples (samples=...)",
        )
    return DatasetCalibrationReader(x[:whole], spec.name, first)


def describe(reader: DatasetCalibrationReader, split: str) -> dict[str, Any]:
    """What calibration used, for a variant's settings (samples, batch, source split)."""
    return {"samples": len(reader.x), "batch_size": reader.batch_size, "split": split}
