"""What a benchmark runs: an ONNX Runtime session for ``.onnx``, the runtime's engine otherwise.

ONNX files run on a bare ONNX Runtime session on the CPU provider (the reference every other
figure compares with). Any other format the runtime opens (``.tflite`` with LiteRT, OpenVINO IR
``.xml`` + ``.bin``) runs through :func:`edgeloop.runtime.load_model`, the same engine the
server uses, so a full-integer ``.tflite`` is fed floats the way it is served: quantized with
its own scale and zero point by the engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from edgeloop.core.errors import ConversionError, EdgeError, NotFoundError, UntrustedArtifactError
from edgeloop.core.types import TensorSpec

ORT_PROVIDER = "CPUExecutionProvider"
# Engine name -> the distribution whose version the report names.
_DISTRIBUTIONS = {"litert": ("ai-edge-litert", "tflite-runtime"), "openvino": ("openvino",)}

Batch = dict[str, npt.NDArray[Any]]


class Runner(Protocol):
    """One loaded model as a benchmark sees it."""

    @property
    def engine(self) -> str: ...
    @property
    def engine_version(self) -> str: ...
    @property
    def provider(self) -> str: ...
    @property
    def inputs(self) -> tuple[TensorSpec, ...]: ...
    @property
    def size_bytes(self) -> int: ...

    def run(self, batch: Batch) -> list[npt.NDArray[Any]]:
        """The model's outputs, in declared order.

        Raises:
            ConversionError: the engine failed on this input.
        """
        ...


def open_session(path: Path, threads: int) -> Any:
    """An ONNX Runtime session on the CPU provider with ``threads`` intra-op threads.

    Raises:
        UntrustedArtifactError: the file is not a model ONNX Runtime can parse.
        ConversionError: ONNX Runtime parsed it but cannot build a session (unsupported op, ...).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1  # one request at a time: no parallel branches to overlap
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only; warnings would land in --format json's stderr
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=[ORT_PROVIDER])
    # ORT's error classes are not public API and derive straight from Exception.
    except Exception as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "PROTOBUF" in text.upper() or "No graph" in text:
            raise UntrustedArtifactError(
                f"{str(path)!r} is not an ONNX model ONNX Runtime can parse: {text}",
                hint="check the file is a complete .onnx export",
            ) from exc
        raise ConversionError(
            f"ONNX Runtime {ort.__version__} cannot load {str(path)!r}: {text}",
            hint="re-export the model with an opset and ops ONNX Runtime supports (17-21)",
        ) from exc


@dataclass
class OrtRunner:
    """A bare ONNX Runtime session (the file checked by ``inspect_onnx`` first)."""

    session: Any
    inputs: tuple[TensorSpec, ...]
    size_bytes: int
    engine_version: str
    engine: str = "onnxruntime"

    @property
    def provider(self) -> str:
        return str(self.session.get_providers()[0])

    def run(self, batch: Batch) -> list[npt.NDArray[Any]]:
        try:
            return list(self.session.run(None, batch))
        except Exception as exc:  # ORT's error classes are not public API
            raise ConversionError(
                f"ONNX Runtime failed on inputs {_shapes(batch)}: {exc}",
                hint="check the model's declared input shapes, or pass --data with real samples",
            ) from exc


@dataclass
class EngineRunner:
    """A model loaded by the runtime's engine for its suffix (LiteRT, OpenVINO)."""

    model: Any  # edgeloop.runtime.LoadedModel
    size_bytes: int
    engine_version: str

    @property
    def engine(self) -> str:
        return str(self.model.engine)

    @property
    def provider(self) -> str:
        return str(self.model.provider)

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return tuple(self.model.inputs)

    def run(self, batch: Batch) -> list[npt.NDArray[Any]]:
        try:
            outputs = self.model.run(batch)
        except EdgeError as exc:
            raise ConversionError(
                f"{self.engine} failed on inputs {_shapes(batch)}: {exc.message}",
                hint="check the model's declared input shapes, or pass --data with real samples",
            ) from exc
        return [outputs[spec.name] for spec in self.model.outputs]


def open_runner(path: Path, threads: int) -> Runner:
    """The runner for ``path``, chosen by its suffix.

    Raises:
        NotFoundError: the file does not exist.
        ConfigError: no engine opens the suffix (the message lists the known ones).
        MissingDependencyError: the engine's package is not installed.
        UntrustedArtifactError: the file is not a model its engine can parse.
        ConversionError: the engine cannot build a session for it.
    """
    if path.suffix.lower() == ".onnx":
        import onnxruntime as ort

        from edgeloop.formats.onnx_info import inspect_onnx

        info = inspect_onnx(path)
        return OrtRunner(
            open_session(path, threads),
            info.inputs,
            info.size_bytes + info.external_bytes,
            str(ort.__version__),
        )
    from edgeloop.runtime import SessionConfig, load_model

    model = load_model(path, SessionConfig(intra_op_threads=threads))
    return EngineRunner(model, artifact_bytes(path), _version(model.engine))


def model_inputs(path: Path) -> tuple[TensorSpec, ...]:
    """The declared inputs of the model at ``path`` (raises as :func:`open_runner`)."""
    if path.suffix.lower() == ".onnx":
        from edgeloop.formats.onnx_info import inspect_onnx

        return inspect_onnx(path).inputs
    return open_runner(path, 1).inputs


def artifact_bytes(path: Path) -> int:
    """Bytes of the model: the file, plus the ``.bin`` weights beside an OpenVINO ``.xml``."""
    if not path.is_file():
        raise NotFoundError(f"model file {str(path)!r} does not exist", hint="check the path")
    weights = path.with_suffix(".bin")
    extra = weights.stat().st_size if path.suffix.lower() == ".xml" and weights.is_file() else 0
    return path.stat().st_size + extra


def _version(engine: str) -> str:
    for dist in _DISTRIBUTIONS.get(engine, (engine,)):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return "unknown"


def _shapes(batch: Batch) -> list[str]:
    return [f"{k}: {'x'.join(str(d) for d in np.shape(v))}" for k, v in batch.items()]
