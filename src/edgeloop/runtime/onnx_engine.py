"""ONNX Runtime engine with an execution-provider fallback chain.

At load time the preferred providers (:attr:`SessionConfig.provider_chain`) are tried in order:

1. a provider this onnxruntime build does not have is skipped, and the reason recorded;
2. otherwise a session is created with that provider first and CPU behind it (CPU runs the
   nodes the accelerator does not support, as ONNX Runtime intends);
3. a provider whose session fails to build, or that ONNX Runtime silently drops (it falls back
   to CPU when, say, the CUDA libraries are missing), is recorded with the error and the next
   one is tried. CPU is always last.

The file goes through :func:`edgeloop.formats.inspect_onnx` (size, external-data paths, graph
check) before ONNX Runtime parses it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgeloop.core.errors import (
    ConflictError,
    ConversionError,
    DataError,
    MissingDependencyError,
    UntrustedArtifactError,
)
from edgeloop.core.types import DTYPES, TensorSpec
from edgeloop.runtime.engine import (
    CPU_PROVIDER,
    Feeds,
    GraphOptimization,
    ModelBase,
    ModelInfo,
    Outputs,
    SessionConfig,
    check_feeds,
)

NAME = "onnxruntime"
SessionFactory = Callable[[Path, SessionConfig, list[str]], Any]

# onnxruntime's type strings ("tensor(float)") -> TensorSpec dtypes.
_ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
}
_LEVELS = {
    GraphOptimization.DISABLED: "ORT_DISABLE_ALL",
    GraphOptimization.BASIC: "ORT_ENABLE_BASIC",
    GraphOptimization.EXTENDED: "ORT_ENABLE_EXTENDED",
    GraphOptimization.ALL: "ORT_ENABLE_ALL",
}


def _ort() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise MissingDependencyError("onnxruntime", "serve", "running ONNX models") from exc
    return onnxruntime


class OnnxRuntimeEngine:
    """Loads ``.onnx`` files into ONNX Runtime sessions (see the module docstring)."""

    name: str = NAME
    suffixes: tuple[str, ...] = (".onnx",)

    def available(self) -> tuple[bool, str]:
        try:
            ort = _ort()
        except MissingDependencyError as exc:
            return False, exc.message
        providers = ort.get_available_providers()
        return True, f"onnxruntime {ort.__version__} with {', '.join(providers)}"

    def load(self, path: Path, config: SessionConfig) -> OnnxModel:
        """Check and open ``path``; see :meth:`Engine.load` for what it raises."""
        from edgeloop.formats.onnx_info import inspect_onnx

        inspect_onnx(path)
        return load_with_fallback(Path(path), config, _create_session)


def load_with_fallback(path: Path, config: SessionConfig, create: SessionFactory) -> OnnxModel:
    """Walk the provider chain, building a session with ``create`` until one runs on its provider.

    Raises:
        UntrustedArtifactError: ONNX Runtime cannot parse the file.
        ConversionError: no provider could build a session; the message lists each failure.
    """
    available = _ort().get_available_providers()
    passed_over: list[str] = []  # "NAME: reason", in the chain's order
    failures: list[str] = []
    last: Exception | None = None
    for provider in config.provider_chain:
        if provider not in available:
            passed_over.append(
                f"{provider}: not in this onnxruntime build ({', '.join(available)})"
            )
            continue
        chain = [provider] if provider == CPU_PROVIDER else [provider, CPU_PROVIDER]
        try:
            session = create(path, config, chain)
        except Exception as exc:  # onnxruntime raises its own pybind types; all mean "not here"
            last = exc
            failures.append(f"{provider}: session failed: {_first_line(exc)}")
            passed_over.append(failures[-1])
            continue
        chosen = session.get_providers()[0]
        if chosen != provider:  # e.g. CUDA libraries missing: ORT quietly runs on CPU instead
            passed_over.append(f"{provider}: requested, but onnxruntime fell back to {chosen}")
            continue
        return OnnxModel(session, _info(path, session, config, chosen, tuple(passed_over)))
    raise _load_error(path, failures, last)


def _create_session(path: Path, config: SessionConfig, providers: list[str]) -> Any:
    ort = _ort()
    options = ort.SessionOptions()
    options.intra_op_num_threads = config.threads
    options.inter_op_num_threads = config.inter_op_threads
    options.graph_optimization_level = getattr(
        ort.GraphOptimizationLevel, _LEVELS[config.graph_optimization]
    )
    options.execution_mode = (
        ort.ExecutionMode.ORT_PARALLEL
        if config.parallel_execution
        else ort.ExecutionMode.ORT_SEQUENTIAL
    )
    options.enable_cpu_mem_arena = config.cpu_mem_arena
    options.log_severity_level = 3  # errors only: warnings about unused initializers are noise
    return ort.InferenceSession(str(path), options, providers=providers)


def _load_error(path: Path, failures: list[str], last: Exception | None) -> Exception:
    tried = "; ".join(failures) or "none of the preferred providers is in this onnxruntime build"
    text = _first_line(last) if last is not None else ""
    if "INVALID_PROTOBUF" in text or "INVALID_GRAPH" in text:
        return UntrustedArtifactError(
            f"onnxruntime cannot parse {str(path)!r}: {text}",
            hint="export the model again with `edgeloop export`, or check the file is complete",
        )
    return ConversionError(
        f"no execution provider could load {str(path)!r} ({tried})",
        hint="check the model's opset and ops are supported by this onnxruntime, "
        "or add CPUExecutionProvider to --providers",
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _info(
    path: Path, session: Any, config: SessionConfig, provider: str, fallbacks: tuple[str, ...]
) -> ModelInfo:
    return ModelInfo(
        path=path,
        engine=NAME,
        provider=provider,
        threads=config.threads,
        inputs=tuple(_spec(path, node) for node in session.get_inputs()),
        outputs=tuple(_spec(path, node) for node in session.get_outputs()),
        fallbacks=fallbacks,
        config=config,
    )


def _spec(path: Path, node: Any) -> TensorSpec:
    dtype = _ORT_DTYPES.get(node.type)
    if dtype is None or dtype not in DTYPES:
        raise UntrustedArtifactError(
            f"{str(path)!r}: tensor {node.name!r} has type {node.type}; servable types are "
            + ", ".join(sorted(_ORT_DTYPES)),
        )
    # A free axis is a string (symbolic name) or None in onnxruntime's shape lists.
    shape = tuple(d if isinstance(d, int) and d > 0 else None for d in node.shape)
    return TensorSpec(node.name, shape, dtype)


class OnnxModel(ModelBase):
    """An ONNX Runtime session. ``InferenceSession.run`` is thread-safe, so no lock is held."""

    __slots__ = ("_name", "_output_names", "_run_options", "_session")

    def __init__(self, session: Any, info: ModelInfo) -> None:
        super().__init__(info)
        self._session: Any = session
        self._name = info.path.name
        self._output_names = [t.name for t in info.outputs]
        # A failed run is raised as DataError to the caller; onnxruntime would also log it to
        # stderr, so one bad request from a client would write a line per request.
        self._run_options = _ort().RunOptions()
        self._run_options.log_severity_level = 4

    def run(self, feeds: Feeds) -> Outputs:
        """Run the session on ``feeds``; see :meth:`LoadedModel.run` for what it raises."""
        session = self._session
        if session is None:
            raise ConflictError(
                f"model {self._name!r} was closed (unloaded)",
                hint="acquire the model again from its pool",
            )
        check_feeds(self._name, self.inputs, feeds)
        try:
            values = session.run(self._output_names, feeds, self._run_options)
        except Exception as exc:  # the input passed our checks; the engine still refused it
            raise DataError(
                f"model {self._name!r} failed on this input: {_first_line(exc)}",
                hint="check the input values are in the range the model expects",
            ) from exc
        return dict(zip(self._output_names, (np.asarray(v) for v in values), strict=True))

    def close(self) -> None:
        # Dropping the last reference frees the session (ORT has no explicit close).
        self._session = None
