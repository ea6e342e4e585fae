"""Measure one model on each available engine and pick the fastest: the engine is part of a variant.

The same INT8 file can be slower than FP32 on one engine and twice as fast on another, so a
variant is measured on every engine set-up this machine has and the winner is recorded:

- ``onnxruntime``: the CPU execution provider with the session :mod:`edgeloop.bench` opens
  (explicit intra-op threads, one inter-op thread, sequential, graph optimization level
  ``all``, ORT's default), plus optional session config entries (``session_config``) and
  another graph optimization level (``graph_level``);
- ``openvino``: the CPU plugin, latency hint, one stream, ``threads`` inference threads. On a
  CPU with ``avx512_bf16`` or AMX, OpenVINO runs float layers in bfloat16 unless told
  otherwise, so a run records the precision OpenVINO reports it used and, per compute layer,
  the precision it actually ran (``Convolution:u8``); ``precision_hint="f32"`` asks for FP32.
  ``openvino_config`` adds or overrides CPU plugin properties (``PERFORMANCE_HINT``,
  ``ENABLE_CPU_PINNING``, ...); ``static_shapes`` compiles the model once per input shape it
  is called with (its dynamic batch dimension fixed) instead of once with dynamic shapes.

Timing follows :mod:`edgeloop.bench.measure`: untimed warm-up runs, then each run timed alone
with ``perf_counter_ns`` (batches built before the timer, the garbage collector paused),
percentiles by numpy's linear interpolation, throughput = samples / summed run time.
"""

from __future__ import annotations

import gc
import importlib.util
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt

from edgeloop.core.errors import ConfigError, EdgeError, NotFoundError, require
from edgeloop.core.types import Latency

F32 = npt.NDArray[np.float32]
# OpenVINO layer types that hold the multiply-accumulates (its runtime model's names).
OV_COMPUTE = ("Convolution", "GroupConvolution", "Deconvolution", "FullyConnected", "MatMul")


class Engine(StrEnum):
    ONNXRUNTIME = "onnxruntime"
    OPENVINO = "openvino"


class GraphLevel(StrEnum):
    """ONNX Runtime's graph optimization levels (``all`` includes the layout transformers)."""

    DISABLED = "disabled"
    BASIC = "basic"
    EXTENDED = "extended"
    ALL = "all"


class PrecisionHint(StrEnum):
    """OpenVINO's ``INFERENCE_PRECISION_HINT``; ``default`` lets the plugin choose."""

    DEFAULT = "default"
    F32 = "f32"
    BF16 = "bf16"


@dataclass(frozen=True, slots=True)
class EngineSetup:
    """One engine with the options it runs under."""

    engine: Engine
    precision_hint: PrecisionHint = PrecisionHint.DEFAULT
    session_config: Mapping[str, str] = field(default_factory=dict)
    graph_level: GraphLevel = GraphLevel.ALL
    openvino_config: Mapping[str, str] = field(default_factory=dict)
    static_shapes: bool = False

    def __post_init__(self) -> None:
        ov = self.engine is Engine.OPENVINO
        if not ov and self.precision_hint is not PrecisionHint.DEFAULT:
            raise ConfigError(
                f"precision hint {self.precision_hint.value!r} applies to openvino only",
                hint="ONNX Runtime runs the precision stored in the model",
            )
        if not ov and (self.openvino_config or self.static_shapes):
            raise ConfigError(
                f"openvino_config {dict(self.openvino_config)} and static_shapes="
                f"{self.static_shapes} apply to openvino only"
            )
        if ov and (self.session_config or self.graph_level is not GraphLevel.ALL):
            raise ConfigError(
                f"session config {dict(self.session_config)} and graph level "
                f"{self.graph_level.value!r} apply to onnxruntime only"
            )
        if "INFERENCE_PRECISION_HINT" in self.openvino_config:
            raise ConfigError(
                "INFERENCE_PRECISION_HINT in openvino_config is not valid here",
                hint="pass precision_hint=PrecisionHint.F32 / BF16 instead",
            )

    @property
    def label(self) -> str:
        if self.engine is Engine.OPENVINO:
            extra = [f"{self.precision_hint.value} precision"]
            extra += ["static shapes"] if self.static_shapes else []
            extra += [f"{k}={v}" for k, v in sorted(self.openvino_config.items())]
            return f"openvino ({', '.join(extra)})"
        extras = [f"{k}={v}" for k, v in sorted(self.session_config.items())]
        if self.graph_level is not GraphLevel.ALL:
            extras.insert(0, f"graph level {self.graph_level.value}")
        return f"onnxruntime ({', '.join(extras)})" if extras else "onnxruntime"

    def to_dict(self) -> dict[str, Any]:
        return {
            "engine": self.engine.value,
            "precision_hint": self.precision_hint.value,
            "session_config": dict(self.session_config),
            "graph_level": self.graph_level.value,
            "openvino_config": dict(self.openvino_config),
            "static_shapes": self.static_shapes,
            "label": self.label,
        }


ORT = EngineSetup(Engine.ONNXRUNTIME)
OPENVINO = EngineSetup(Engine.OPENVINO)
OPENVINO_F32 = EngineSetup(Engine.OPENVINO, PrecisionHint.F32)


def available_setups() -> tuple[tuple[EngineSetup, ...], tuple[str, ...]]:
    """The default set-ups this machine can run, and why others are left out."""
    if importlib.util.find_spec("openvino") is None:
        return (ORT,), ("openvino: not installed (pip install 'edgeloop[openvino]')",)
    return (ORT, OPENVINO, OPENVINO_F32), ()


@dataclass(frozen=True, slots=True)
class EngineRun:
    """One timed measurement of one model on one set-up at one batch size.

    ``precision`` is what the engine says it computes float layers in; ``layer_precisions``
    counts compute layers by the precision they ran in (``"Convolution:u8": 49`` for
    OpenVINO, ``"int": n`` / ``"float": m`` compute nodes of ONNX Runtime's optimized graph).
    """

    model: Path
    setup: EngineSetup
    batch_size: int
    threads: int
    runs: int
    latency_ms: Latency
    throughput_per_s: float
    precision: str
    layer_precisions: Mapping[str, int]
    engine_version: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": str(self.model),
            **self.setup.to_dict(),
            "batch_size": self.batch_size,
            "threads": self.threads,
            "runs": self.runs,
            "latency_ms": self.latency_ms.to_dict(),
            "throughput_per_s": self.throughput_per_s,
            "precision": self.precision,
            "layer_precisions": dict(self.layer_precisions),
            "engine_version": self.engine_version,
        }


@dataclass(frozen=True, slots=True)
class EngineComparison:
    """Every run of one model, the set-ups that could not run it (with why), and the winner."""

    runs: tuple[EngineRun, ...]
    skipped: tuple[str, ...] = ()

    def winner(self, batch_size: int) -> EngineRun:
        """The run with the lowest median latency at ``batch_size``.

        Raises:
            NotFoundError: no run at that batch size.
        """
        runs = [r for r in self.runs if r.batch_size == batch_size]
        if not runs:
            sizes = sorted({r.batch_size for r in self.runs})
            raise NotFoundError(f"no run at batch size {batch_size}; measured: {sizes}")
        return min(runs, key=lambda r: r.latency_ms.p50)

    def to_dict(self) -> dict[str, Any]:
        sizes = sorted({r.batch_size for r in self.runs})
        return {
            "runs": [r.to_dict() for r in self.runs],
            "skipped": list(self.skipped),
            "winner": {str(b): self.winner(b).setup.label for b in sizes},
        }


@dataclass(frozen=True)
class Runner:
    """A loaded model: ``run(x)`` returns its first output; the rest says how it runs."""

    run: Callable[[F32], F32]
    precision: str
    layer_precisions: Mapping[str, int]
    engine_version: str


def open_runner(model: Path, setup: EngineSetup, threads: int) -> Runner:
    """Load ``model`` on ``setup`` with ``threads`` threads.

    Raises:
        NotFoundError: the file does not exist.
        MissingDependencyError: openvino is asked for and not installed.
        ConversionError, UntrustedArtifactError: the engine cannot load the model.
    """
    if not model.is_file():
        raise NotFoundError(f"model file {str(model)!r} does not exist", hint="check the path")
    if threads < 1:
        raise ConfigError(f"threads {threads} is not valid; expected >= 1")
    if setup.engine is Engine.OPENVINO:
        return _openvino_runner(model, setup, threads)
    return _ort_runner(model, setup, threads)


def _ort_runner(model: Path, setup: EngineSetup, threads: int) -> Runner:
    import onnxruntime as ort

    from edgeloop.bench.measure import open_session
    from edgeloop.optimize.graph import census

    with tempfile.TemporaryDirectory(prefix="edgeloop-ort-") as tmp:
        # The graph ORT runs after its fusions tells which compute nodes run on integers.
        saved = Path(tmp) / "optimized.onnx"
        _ort_session(model, setup, threads, saved)
        ran = census(saved)
    # Without config entries, the very session edgeloop bench opens.
    session = (
        _ort_session(model, setup, threads, None)
        if setup.session_config or setup.graph_level is not GraphLevel.ALL
        else open_session(model, threads)
    )
    name = session.get_inputs()[0].name

    def run(x: F32) -> F32:
        return np.asarray(session.run(None, {name: x})[0])

    return Runner(
        run=run,
        precision="as stored in the model",
        layer_precisions=MappingProxyType({"int": ran.int_compute, "float": ran.float_compute}),
        engine_version=str(ort.__version__),
    )


def _ort_session(model: Path, setup: EngineSetup, threads: int, save_to: Path | None) -> Any:
    """A session like :func:`edgeloop.bench.measure.open_session` plus ``session_config``."""
    import onnxruntime as ort

    from edgeloop.core.errors import ConversionError

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    levels = {
        GraphLevel.DISABLED: ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        GraphLevel.BASIC: ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        GraphLevel.EXTENDED: ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        GraphLevel.ALL: ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    options.graph_optimization_level = levels[setup.graph_level]
    for key, value in setup.session_config.items():
        options.add_session_config_entry(key, value)
    if save_to is not None:
        options.optimized_model_filepath = str(save_to)
    try:
        return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT's error classes are not public API
        raise ConversionError(f"ONNX Runtime cannot load {str(model)!r}: {exc}") from exc


def _openvino_runner(model: Path, setup: EngineSetup, threads: int) -> Runner:
    from edgeloop.core.errors import ConversionError

    ov = require("openvino", "openvino", "measuring a model on OpenVINO")
    config: dict[str, Any] = {
        "INFERENCE_NUM_THREADS": threads,
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": 1,
        **setup.openvino_config,
    }
    if setup.precision_hint is not PrecisionHint.DEFAULT:
        config["INFERENCE_PRECISION_HINT"] = setup.precision_hint.value
    core = ov.Core()

    def compile_for(shape: tuple[int, ...] | None) -> Any:
        try:
            read = core.read_model(str(model))
            if shape is not None:
                read.reshape(list(shape))
            return core.compile_model(read, "CPU", config)
        except RuntimeError as exc:
            raise ConversionError(
                f"OpenVINO cannot compile {str(model)!r}: {openvino_reason(str(exc))}"
            ) from exc

    compiled = compile_for(None)
    requests: dict[tuple[int, ...] | None, tuple[Any, Any]] = {
        None: (compiled.create_infer_request(), compiled.output(0))
    }

    def run(x: F32) -> F32:
        # static_shapes: one compiled model per input shape, made on its first call.
        key = tuple(x.shape) if setup.static_shapes else None
        if key not in requests:
            fixed = compile_for(key)
            requests[key] = (fixed.create_infer_request(), fixed.output(0))
        request, output = requests[key]
        return np.array(request.infer({0: x})[output])

    return Runner(
        run=run,
        precision=compiled.get_property("INFERENCE_PRECISION_HINT").to_string(),
        layer_precisions=MappingProxyType(_ov_layer_precisions(compiled)),
        engine_version=str(ov.get_version()),
    )


def openvino_reason(text: str) -> str:
    """The informative part of an OpenVINO error (pure).

    OpenVINO's messages open with lines of source locations; the operators it could not convert
    are named in its summary lines (``-- No conversion rule found for operations: ...``).
    """
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    summary = [line.lstrip("- ") for line in lines if line.startswith(("-- No conv", "-- Conv"))]
    if summary:
        return "; ".join(summary)
    plain = [line for line in lines if not line.startswith(("Exception from", "Check '"))]
    return (plain or lines or ["unknown error"])[-1]


def _ov_layer_precisions(compiled: Any) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        layer = info["layerType"].astype(str)
        if layer in OV_COMPUTE:
            counts[f"{layer}:{info['runtimePrecision'].astype(str)}"] += 1
    return dict(sorted(counts.items()))


def batches(inputs: F32, batch_size: int, count: int) -> list[F32]:
    """``count`` batches of ``batch_size`` rows of ``inputs``, in order, cycling (pure)."""
    if len(inputs) == 0:
        raise ConfigError("no input samples to time the model on")
    return [
        np.ascontiguousarray(inputs.take((i * batch_size + np.arange(batch_size)) % len(inputs), 0))
        for i in range(count)
    ]


def time_runs(
    run: Callable[[F32], Any], inputs: F32, batch_size: int, runs: int, warmup: int
) -> tuple[Latency, float]:
    """Warm up, then time ``runs`` calls one by one: (percentiles in ms, samples per second)."""
    if runs < 1 or warmup < 0 or batch_size < 1:
        raise ConfigError(
            f"runs={runs}, warmup={warmup}, batch_size={batch_size}: runs and batch size "
            "must be >= 1, warm-up >= 0"
        )
    feeds = batches(inputs, batch_size, min(runs, 8))  # a few distinct batches, reused
    for i in range(warmup):
        run(feeds[i % len(feeds)])
    took = np.empty(runs, dtype=np.int64)
    gc_was_on = gc.isenabled()
    gc.disable()  # a collector pause inside a timed run is the collector's, not the model's
    try:
        for i in range(runs):
            batch = feeds[i % len(feeds)]
            start = time.perf_counter_ns()
            run(batch)
            took[i] = time.perf_counter_ns() - start
    finally:
        if gc_was_on:
            gc.enable()
    p50, p90, p99 = (float(v) for v in np.percentile(took / 1e6, [50, 90, 99]))
    return Latency(p50, p90, p99), batch_size * runs / (float(took.sum()) / 1e9)


def measure_engines(
    model: Path,
    inputs: F32,
    *,
    setups: Sequence[EngineSetup] | None = None,
    batch_sizes: Sequence[int] = (1,),
    threads: int = 1,
    runs: int = 50,
    warmup: int = 10,
) -> EngineComparison:
    """Time ``model`` on each set-up (default: :func:`available_setups`) at each batch size.

    A set-up that cannot load the model is recorded in ``skipped`` with the reason, so one
    engine's gap does not hide the others' figures.

    Raises:
        NotFoundError: the model file does not exist.
        ConfigError: bad counts, or no set-up could run the model.
    """
    chosen, skipped = (tuple(setups), ()) if setups is not None else available_setups()
    results: list[EngineRun] = []
    reasons = list(skipped)
    for setup in chosen:
        try:
            runner = open_runner(model, setup, threads)
        except NotFoundError:
            raise
        except EdgeError as exc:
            reasons.append(f"{setup.label}: {exc.message}")
            continue
        for size in batch_sizes:
            latency, throughput = time_runs(runner.run, inputs, size, runs, warmup)
            results.append(
                EngineRun(
                    model=model,
                    setup=setup,
                    batch_size=size,
                    threads=threads,
                    runs=runs,
                    latency_ms=latency,
                    throughput_per_s=throughput,
                    precision=runner.precision,
                    layer_precisions=runner.layer_precisions,
                    engine_version=runner.engine_version,
                )
            )
    if not results:
        raise ConfigError(
            f"no engine could run {str(model)!r}: " + "; ".join(reasons),
            hint="check the model loads with `edgeloop bench MODEL`",
        )
    return EngineComparison(tuple(results), tuple(reasons))
