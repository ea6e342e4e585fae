"""LiteRT (TensorFlow Lite) engine for ``.tflite`` files, when ``ai-edge-litert`` is installed.

LiteRT ships as ``ai_edge_litert`` (the successor of ``tflite_runtime``, which is accepted too).
A TFLite interpreter is not thread-safe, so :class:`LiteRtModel` runs one inference at a time
under a lock; a free batch axis is resized before the run when the batch size changes.

A full-integer model (``tflite-int8``) takes and gives integer tensors with a scale and zero
point. The model reports those tensors as float32, the values they stand for, and the engine
quantizes float inputs (q = round(x / scale) + zero_point) and dequantizes integer outputs
((q - zero_point) * scale) itself: a caller (the server, a benchmark) sends the same floats it
sends the float parent, never raw floats truncated into int8.
"""

from __future__ import annotations

import importlib
import importlib.util
import threading
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edgeloop.core.errors import (
    ConflictError,
    DataError,
    MissingDependencyError,
    UntrustedArtifactError,
)
from edgeloop.core.types import DTYPES, TensorSpec
from edgeloop.runtime.engine import (
    Feeds,
    ModelBase,
    ModelInfo,
    Outputs,
    SessionConfig,
    check_feeds,
)

NAME = "litert"
EXTRA = "tflite"
# Module names in order of preference: the maintained package first.
_MODULES = ("ai_edge_litert", "tflite_runtime")


def _interpreter_class() -> Any:
    for module in _MODULES:
        if importlib.util.find_spec(module) is not None:
            return importlib.import_module(f"{module}.interpreter").Interpreter
    raise MissingDependencyError("ai_edge_litert", EXTRA, "running .tflite models")


class LiteRtEngine:
    """Loads ``.tflite`` files into a LiteRT interpreter."""

    name: str = NAME
    suffixes: tuple[str, ...] = (".tflite",)

    def available(self) -> tuple[bool, str]:
        # find_spec looks the package up without importing it (no TensorFlow start-up cost).
        found = next((m for m in _MODULES if importlib.util.find_spec(m) is not None), None)
        if found is None:
            return False, (
                f"neither {' nor '.join(_MODULES)} is installed (pip install 'edgeloop[{EXTRA}]')"
            )
        return True, f"{found} is installed"

    def load(self, path: Path, config: SessionConfig) -> LiteRtModel:
        """Open ``path``; see :meth:`Engine.load` for what it raises."""
        interpreter_class = _interpreter_class()
        try:
            interpreter = interpreter_class(model_path=str(path), num_threads=config.threads)
            interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise UntrustedArtifactError(
                f"LiteRT cannot open {str(path)!r}: {exc}",
                hint="convert the model again, or check the file is a complete .tflite model",
            ) from exc
        inputs = tuple(_spec(path, d) for d in interpreter.get_input_details())
        outputs = tuple(_spec(path, d) for d in interpreter.get_output_details())
        info = ModelInfo(
            path=path,
            engine=NAME,
            provider="litert:cpu",
            threads=config.threads,
            inputs=inputs,
            outputs=outputs,
            config=config,
        )
        return LiteRtModel(interpreter, info)


def _spec(path: Path, detail: dict[str, Any]) -> TensorSpec:
    dtype = np.dtype(detail["dtype"]).name
    if dtype not in DTYPES:
        raise UntrustedArtifactError(
            f"{str(path)!r}: tensor {detail['name']!r} has dtype {dtype}; servable dtypes are "
            + ", ".join(DTYPES)
        )
    signature = detail.get("shape_signature", detail["shape"])
    if _scale(detail) is not None:
        dtype = "float32"  # the values the integers stand for: the engine converts at the edge
    return TensorSpec(
        str(detail["name"]), tuple(int(d) if d > 0 else None for d in signature), dtype
    )


def _scale(detail: dict[str, Any]) -> tuple[float, int] | None:
    """(scale, zero point) of an affine-quantized integer tensor; None for a plain tensor."""
    scale, zero = detail.get("quantization", (0.0, 0))
    if np.dtype(detail["dtype"]).kind not in "iu" or not scale:
        return None
    return float(scale), int(zero)


def quantize(x: npt.NDArray[Any], detail: dict[str, Any]) -> npt.NDArray[Any]:
    """``x`` in the tensor's own type: q = round(x / scale) + zero_point, clipped to the
    type's range; a tensor without quantization parameters is only cast (pure)."""
    dtype = np.dtype(detail["dtype"])
    params = _scale(detail)
    if params is None:
        return np.ascontiguousarray(x, dtype=dtype)
    scale, zero = params
    info = np.iinfo(dtype)
    q = np.clip(np.round(np.asarray(x, dtype=np.float32) / scale) + zero, info.min, info.max)
    return np.ascontiguousarray(q.astype(dtype))


def dequantize(y: npt.NDArray[Any], detail: dict[str, Any]) -> npt.NDArray[Any]:
    """The float value of a quantized tensor: (q - zero_point) * scale; others as they are."""
    params = _scale(detail)
    if params is None:
        return y
    scale, zero = params
    return np.asarray((y.astype(np.float32) - zero) * scale, dtype=np.float32)


class LiteRtModel(ModelBase):
    """A LiteRT interpreter behind a lock (interpreters are not thread-safe)."""

    __slots__ = ("_in", "_interpreter", "_lock", "_out")

    def __init__(self, interpreter: Any, info: ModelInfo) -> None:
        super().__init__(info)
        self._interpreter: Any = interpreter
        self._lock = threading.Lock()
        # name -> tensor detail (index, dtype, quantization): what run() converts with.
        self._in = {d["name"]: d for d in interpreter.get_input_details()}
        self._out = {d["name"]: d for d in interpreter.get_output_details()}

    def run(self, feeds: Feeds) -> Outputs:
        """Run the interpreter on ``feeds``; see :meth:`LoadedModel.run`."""
        check_feeds(self.path.name, self.inputs, feeds)
        with self._lock:
            interpreter = self._interpreter
            if interpreter is None:
                raise ConflictError(
                    f"model {self.path.name!r} was closed (unloaded)",
                    hint="acquire the model again from its pool",
                )
            try:
                self._resize(interpreter, feeds)
                for name, detail in self._in.items():
                    interpreter.set_tensor(detail["index"], quantize(feeds[name], detail))
                interpreter.invoke()
                # get_tensor copies, so the result survives the next run.
                return {
                    name: dequantize(interpreter.get_tensor(d["index"]), d)
                    for name, d in self._out.items()
                }
            except (ValueError, RuntimeError) as exc:
                raise DataError(f"model {self.path.name!r} failed on this input: {exc}") from exc

    def _resize(self, interpreter: Any, feeds: Feeds) -> None:
        current = {d["name"]: tuple(d["shape"]) for d in interpreter.get_input_details()}
        changed = False
        for name, detail in self._in.items():
            if current[name] != feeds[name].shape:
                interpreter.resize_tensor_input(detail["index"], list(feeds[name].shape))
                changed = True
        if changed:
            interpreter.allocate_tensors()

    def close(self) -> None:
        with self._lock:
            self._interpreter = None
