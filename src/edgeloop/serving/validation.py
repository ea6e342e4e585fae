"""Does a decoded request fit the model? Names, datatypes, shapes, batch sizes, finite values.

Pure functions over numpy arrays and the model's :class:`TensorSpec` s. Each failure is a
:class:`DataError` (HTTP 422) whose message names the tensor, what the model expects and what
came, so a client can fix the request without reading server logs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from edgeloop.core.errors import DataError
from edgeloop.core.types import TensorSpec, shape_str
from edgeloop.serving.oip import DATATYPES, InputTensor, RequestedOutput, datatype_of


def check_inputs(
    where: str,
    tensors: Sequence[InputTensor],
    specs: Sequence[TensorSpec],
    *,
    allow_nonfinite: bool = False,
) -> dict[str, np.ndarray[Any, Any]]:
    """The feeds for the model, in its input order, once every check passed.

    ``where`` names the model in messages (``"model 'cnn' version 2"``).

    Raises:
        DataError: an unknown, missing or repeated input; a datatype, rank or axis that differs
            from the model's; inputs that disagree on the batch size; NaN or Inf in a float
            input when ``allow_nonfinite`` is False.
    """
    by_name = _unique(where, tensors, specs)
    feeds: dict[str, np.ndarray[Any, Any]] = {}
    for spec in specs:
        tensor = by_name[spec.name]
        _check_datatype(where, tensor, spec)
        _check_shape(where, tensor.name, tensor.shape, spec)
        if not allow_nonfinite and tensor.array.dtype.kind == "f":
            check_finite(where, tensor.name, tensor.array)
        feeds[spec.name] = tensor.array
    _check_batch(where, tensors, specs)
    return feeds


def check_outputs(
    where: str, requested: Sequence[RequestedOutput] | None, specs: Sequence[TensorSpec]
) -> tuple[str, ...]:
    """The output names to answer with, in the order asked (all outputs when none were asked).

    Raises:
        DataError: an output the model does not have, or one asked for twice.
    """
    known = [s.name for s in specs]
    if requested is None:
        return tuple(known)
    names = [o.name for o in requested]
    for name in names:
        if name not in known:
            raise DataError(
                f"output {name!r} is not an output of {where}; its outputs are {_names(known)}"
            )
    if len(set(names)) != len(names):
        raise DataError(f"request 'outputs' names an output twice: {names}")
    return tuple(names)


def check_finite(where: str, name: str, array: np.ndarray[Any, Any]) -> None:
    """Raise :class:`DataError` naming the first NaN/Inf of ``array``, if it has one."""
    # A finite sum proves every value finite (one NaN or Inf makes the sum NaN or Inf) and is
    # one pass without a temporary; only a non-finite sum (or an overflow) needs the full check.
    if math.isfinite(float(np.add.reduce(array, axis=None, dtype=np.float64))):
        return
    finite = np.isfinite(array)
    if finite.all():
        return
    bad = np.flatnonzero(~finite.reshape(-1))
    raise DataError(
        f"input {name!r} of {where} holds {bad.size} NaN/Inf value(s), the first at flat index "
        f"{int(bad[0])} ({array.reshape(-1)[bad[0]]}); the model expects finite numbers",
        hint="clean the input; the server was started without --allow-nonfinite",
    )


def _unique(
    where: str, tensors: Sequence[InputTensor], specs: Sequence[TensorSpec]
) -> Mapping[str, InputTensor]:
    expected = [s.name for s in specs]
    by_name: dict[str, InputTensor] = {}
    for tensor in tensors:
        if tensor.name not in expected:
            raise DataError(
                f"input {tensor.name!r} is not an input of {where}; it expects {_describe(specs)}"
            )
        if tensor.name in by_name:
            raise DataError(f"input {tensor.name!r} is given twice")
        by_name[tensor.name] = tensor
    missing = [n for n in expected if n not in by_name]
    if missing:
        raise DataError(f"input {_names(missing)} missing; {where} expects {_describe(specs)}")
    return by_name


def _check_datatype(where: str, tensor: InputTensor, spec: TensorSpec) -> None:
    expected = datatype_of(spec)
    if DATATYPES[tensor.datatype] != DATATYPES[expected]:
        raise DataError(
            f"input {tensor.name!r} has datatype {tensor.datatype}; {where} expects {expected}",
            hint=f"send {spec.name!r} as {expected}",
        )


def _check_shape(where: str, name: str, shape: Sequence[int], spec: TensorSpec) -> None:
    """Compare a request shape with the model's (a free axis ``None`` takes any size >= 1)."""
    problem = None
    if len(shape) != len(spec.shape):
        problem = f"rank {len(shape)}, expected rank {len(spec.shape)}"
    elif 0 in shape:
        problem = f"axis {list(shape).index(0)} is empty"
    else:
        for axis, (got, want) in enumerate(zip(shape, spec.shape, strict=True)):
            if want is not None and got != want:
                problem = f"axis {axis} is {got}, expected {want}"
                break
    if problem:
        raise DataError(
            f"input {name!r} has shape {list(shape)}; {where} expects "
            f"[{', '.join('-1' if d is None else str(d) for d in spec.shape)}] ({problem})",
            hint="-1 marks a free axis (the batch axis, usually)",
        )


def _check_batch(where: str, tensors: Sequence[InputTensor], specs: Sequence[TensorSpec]) -> None:
    """Inputs whose first axis is free are batched together, so they must agree on it."""
    free = {s.name for s in specs if s.shape and s.shape[0] is None}
    sizes = {t.name: t.shape[0] for t in tensors if t.name in free}
    if len(set(sizes.values())) > 1:
        raise DataError(
            f"the inputs of {where} disagree on the batch size (axis 0): "
            + ", ".join(f"{n!r} has {b}" for n, b in sizes.items())
        )


def _describe(specs: Sequence[TensorSpec]) -> str:
    return ", ".join(f"{s.name!r} ({datatype_of(s)} {shape_str(s.shape)})" for s in specs)


def _names(names: Sequence[str]) -> str:
    return ", ".join(repr(n) for n in names)
