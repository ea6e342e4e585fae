"""The engine interface: how to open a model file, what a loaded model reports, how it runs.

An :class:`Engine` (ONNX Runtime, OpenVINO, LiteRT) turns a file and a :class:`SessionConfig`
into a :class:`LoadedModel`. A loaded model reports what was actually chosen (engine, execution
provider, thread count) and which preferred providers were passed over and why, so a figure
measured on it can name the hardware path it took.

Nothing here imports an engine library; each engine module imports its own, lazily.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from edgeloop.core.errors import ConfigError, DataError
from edgeloop.core.types import TensorSpec, shape_str

# Fastest first. TensorRT and CUDA need NVIDIA GPUs, OpenVINO Intel CPUs/GPUs/NPUs, CoreML Apple
# silicon; CPU is everywhere and always last so a chain never ends without a provider.
DEFAULT_PROVIDERS: tuple[str, ...] = (
    "TensorrtExecutionProvider",
    "CUDAExecutionProvider",
    "OpenVINOExecutionProvider",
    "CoreMLExecutionProvider",
    "CPUExecutionProvider",
)
CPU_PROVIDER = "CPUExecutionProvider"
# File suffix -> the format word of a platform name (OpenVINO's IR is an .xml + .bin pair).
_FORMATS = {"xml": "ir"}

Feeds = Mapping[str, np.ndarray]
Outputs = dict[str, np.ndarray]


class GraphOptimization(StrEnum):
    """ONNX Runtime's graph optimization levels (OpenVINO and LiteRT optimise on their own)."""

    DISABLED = "disabled"
    BASIC = "basic"
    EXTENDED = "extended"
    ALL = "all"


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """How to open a model: threads, execution providers in order of preference, optimizations.

    ``intra_op_threads=None`` means one thread per CPU this process may run on; the number is
    always set explicitly on the session and reported as ``LoadedModel.threads``.
    ``providers=None`` probes :data:`DEFAULT_PROVIDERS`. ``device`` is OpenVINO's device name
    (``CPU``, ``GPU``, ``NPU``, ``AUTO``).
    """

    intra_op_threads: int | None = None
    inter_op_threads: int = 1
    providers: tuple[str, ...] | None = None
    graph_optimization: GraphOptimization = GraphOptimization.ALL
    parallel_execution: bool = False
    cpu_mem_arena: bool = True
    device: str = "CPU"

    def __post_init__(self) -> None:
        if self.intra_op_threads is not None and self.intra_op_threads < 1:
            raise ConfigError(
                f"intra_op_threads={self.intra_op_threads} is not valid; expected >= 1",
                hint="leave it unset for one thread per usable CPU",
            )
        if self.inter_op_threads < 1:
            raise ConfigError(
                f"inter_op_threads={self.inter_op_threads} is not valid; expected >= 1"
            )
        if self.providers is not None:
            _check_providers(self.providers)
        if not isinstance(self.graph_optimization, GraphOptimization):
            raise ConfigError(
                f"graph_optimization={self.graph_optimization!r} is not valid; expected one of "
                + ", ".join(g.value for g in GraphOptimization)
            )
        if not self.device:
            raise ConfigError("device must be a non-empty name such as 'CPU' or 'AUTO'")

    @property
    def threads(self) -> int:
        """The intra-op thread count that will be set on the session."""
        return self.intra_op_threads if self.intra_op_threads is not None else usable_cpus()

    @property
    def provider_chain(self) -> tuple[str, ...]:
        """Providers to try, in order; CPU is appended when the caller left it out."""
        chain = self.providers if self.providers is not None else DEFAULT_PROVIDERS
        return chain if CPU_PROVIDER in chain else (*chain, CPU_PROVIDER)

    def to_dict(self) -> dict[str, Any]:
        return {
            "intra_op_threads": self.intra_op_threads,
            "inter_op_threads": self.inter_op_threads,
            "providers": None if self.providers is None else list(self.providers),
            "graph_optimization": self.graph_optimization.value,
            "parallel_execution": self.parallel_execution,
            "cpu_mem_arena": self.cpu_mem_arena,
            "device": self.device,
        }


def _check_providers(providers: tuple[str, ...]) -> None:
    if not providers:
        raise ConfigError(
            "providers=() names no execution provider",
            hint="leave providers unset to probe " + " -> ".join(DEFAULT_PROVIDERS),
        )
    bad = [p for p in providers if not isinstance(p, str) or not p.endswith("ExecutionProvider")]
    if bad:
        raise ConfigError(
            f"providers {bad!r} are not execution provider names; expected names such as "
            + ", ".join(DEFAULT_PROVIDERS),
        )
    if len(set(providers)) != len(providers):
        raise ConfigError(f"providers {list(providers)!r} names a provider twice")


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What a loaded model reports about itself; the same for every engine."""

    path: Path
    engine: str
    provider: str
    threads: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    fallbacks: tuple[str, ...] = ()
    config: SessionConfig = SessionConfig()

    def __post_init__(self) -> None:
        if not self.inputs:
            raise ConfigError(f"model {str(self.path)!r} reports no inputs")
        if self.threads < 1:
            raise ConfigError(f"model {str(self.path)!r} reports {self.threads} threads")

    @property
    def platform(self) -> str:
        """The KServe / Triton ``platform`` of this model: ``ENGINE_FORMAT``, as
        ``onnxruntime_onnx``, ``litert_tflite``, ``openvino_ir`` (``.xml``), ``openvino_onnx``."""
        suffix = self.path.suffix.lower().lstrip(".")
        return f"{self.engine}_{_FORMATS.get(suffix, suffix or 'model')}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "engine": self.engine,
            "platform": self.platform,
            "provider": self.provider,
            "threads": self.threads,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "fallbacks": list(self.fallbacks),
            "config": self.config.to_dict(),
        }


@runtime_checkable
class LoadedModel(Protocol):
    """A model ready to run. ``run`` is safe to call from several threads at once."""

    @property
    def info(self) -> ModelInfo: ...
    @property
    def path(self) -> Path: ...
    @property
    def inputs(self) -> tuple[TensorSpec, ...]: ...
    @property
    def outputs(self) -> tuple[TensorSpec, ...]: ...
    @property
    def engine(self) -> str: ...
    @property
    def provider(self) -> str: ...
    @property
    def threads(self) -> int: ...
    @property
    def fallbacks(self) -> tuple[str, ...]: ...

    def run(self, feeds: Feeds) -> Outputs:
        """Run one (batched) inference.

        Raises:
            DataError: a feed is missing, unknown, or of the wrong dtype or shape, or the
                engine rejected this input.
            ConflictError: the model was closed.
        """
        ...

    def close(self) -> None:
        """Release the engine's resources; later ``run`` calls raise ConflictError."""
        ...


class Engine(Protocol):
    """One inference engine. ``available`` never raises; ``load`` does when it is not."""

    name: str
    suffixes: tuple[str, ...]

    def available(self) -> tuple[bool, str]:
        """Whether this engine can load models here, and why (or why not)."""
        ...

    def load(self, path: Path, config: SessionConfig) -> LoadedModel:
        """Open ``path``.

        Raises:
            MissingDependencyError: the engine's package is not installed.
            NotFoundError: ``path`` does not exist.
            UntrustedArtifactError: the file failed the safety checks or is not a model.
            ConversionError: every execution provider failed to build a session.
        """
        ...


class ModelBase:
    """Shared plumbing of loaded models: the reported facts live in one :class:`ModelInfo`."""

    __slots__ = ("_info",)

    def __init__(self, info: ModelInfo) -> None:
        self._info = info

    @property
    def info(self) -> ModelInfo:
        return self._info

    @property
    def path(self) -> Path:
        return self._info.path

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self._info.inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self._info.outputs

    @property
    def engine(self) -> str:
        return self._info.engine

    @property
    def provider(self) -> str:
        return self._info.provider

    @property
    def threads(self) -> int:
        return self._info.threads

    @property
    def fallbacks(self) -> tuple[str, ...]:
        return self._info.fallbacks

    def to_dict(self) -> dict[str, Any]:
        return self._info.to_dict()


def check_feeds(model: str, specs: tuple[TensorSpec, ...], feeds: Feeds) -> None:
    """Check ``feeds`` against a model's input specs: names, dtypes, ranks and fixed axes.

    Cheap (a few microseconds) so every ``run`` can afford it; it turns an engine's terse
    error into one that names the tensor, what was expected and what came.

    Raises:
        DataError: naming the first bad tensor.
    """
    if len(feeds) != len(specs) or any(s.name not in feeds for s in specs):
        expected = ", ".join(s.name for s in specs)
        raise DataError(
            f"model {model!r} expects inputs [{expected}], got [{', '.join(feeds)}]",
            hint="send exactly one tensor per model input, named as in the model's metadata",
        )
    for spec in specs:
        value = feeds[spec.name]
        if not isinstance(value, np.ndarray):
            raise DataError(
                f"input {spec.name!r} of model {model!r} is a {type(value).__name__}, "
                "expected a numpy array"
            )
        if value.dtype.name != spec.dtype:
            raise DataError(
                f"input {spec.name!r} of model {model!r} has dtype {value.dtype.name}, "
                f"expected {spec.dtype}",
                hint=f"convert the tensor to {spec.dtype} before sending it",
            )
        if not _shape_fits(spec.shape, value.shape):
            raise DataError(
                f"input {spec.name!r} of model {model!r} has shape {shape_str(value.shape)}, "
                f"expected {shape_str(spec.shape)} ('?' is any size)",
            )


def _shape_fits(expected: tuple[int | None, ...], got: tuple[int, ...]) -> bool:
    if len(expected) != len(got):
        return False
    return all(e is None or e == g for e, g in zip(expected, got, strict=True))
