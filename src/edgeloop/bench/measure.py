"""Benchmark one model: latency, throughput, memory, power, accuracy.

The method, so a reader can judge the figures:

1. An ONNX file is checked (:func:`edgeloop.formats.onnx_info.inspect_onnx`) before anything
   runs; ``.tflite`` and OpenVINO IR (``.xml``) files are opened by the runtime's engine for
   their suffix (:mod:`edgeloop.bench.runner`), as the server opens them.
2. One session (ONNX: on ``CPUExecutionProvider``) with an explicit intra-op thread count
   (default: the physical cores this process may use); the provider actually used is recorded.
3. ``warmup`` untimed runs (allocator growth, lazy kernel choice), then ``runs`` timed runs at
   ``batch_size``. Each run's ``session.run`` is timed alone with ``perf_counter_ns``; building
   the batch happens outside the timer, and the garbage collector is paused while timing.
4. Latency percentiles are numpy's (linear interpolation) over the timed runs; throughput is
   ``batch_size * runs / (sum of timed run durations)``.
5. Power comes from a real meter bracketing the timed runs (:mod:`edgeloop.bench.power`).
6. Peak RSS is the process's resident high-water mark (:func:`peak_rss_mb`) read right after
   the timed runs, before the accuracy pass: of a fresh worker with ``isolate=True``, else of
   the caller.
7. With a data set, the whole set is run once more, untimed, for accuracy (or ROC-AUC, see
   :mod:`edgeloop.bench.scoring`).
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edgeloop.bench.feeds import Feeds, plan_feeds
from edgeloop.bench.machine import Machine, describe_machine, usable_cpus
from edgeloop.bench.power import PowerProbe, PowerReading, detect_power_probe
from edgeloop.bench.report import BenchConfig, BenchReport, RssScope
from edgeloop.bench.runner import Runner, open_runner, open_session
from edgeloop.bench.scoring import Score, score_outputs
from edgeloop.core.errors import ConversionError
from edgeloop.core.types import Latency, Measurement
from edgeloop.data.dataset import Dataset

__all__ = ["benchmark", "measure", "open_session", "peak_rss_mb", "run_benchmark"]
Progress = Callable[[int, int], None]  # (runs done, runs in all), warm-up included


def default_threads(machine: Machine) -> int:
    """Physical cores this process may use: hyper-threads rarely help one inference."""
    return max(1, min(machine.physical_cores, usable_cpus()))


def peak_rss_mb(proc_status: Path = Path("/proc/self/status")) -> float | None:
    """This process's peak resident set size in MiB, or None where the OS does not say.

    On Linux this is ``VmHWM`` of ``/proc/self/status``, the high-water mark of this address
    space. ``getrusage().ru_maxrss`` is not used there: the kernel carries it over ``execve``,
    so a fresh worker started from a 150 MiB parent would report the parent's 150 MiB.
    """
    try:
        for line in proc_status.read_text(encoding="ascii").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # the kernel reports kB (KiB)
    except (OSError, ValueError, IndexError):
        pass  # not Linux: fall back to getrusage below
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024**2 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB


def measure(
    config: BenchConfig,
    data: Dataset | None,
    rss_scope: RssScope,
    progress: Progress | None = None,
    probe: PowerProbe | None = None,
) -> BenchReport:
    """Benchmark in this process; ``rss_scope`` says whose peak RSS that is.

    Raises:
        NotFoundError: the model file does not exist.
        UntrustedArtifactError: the file is not a valid model.
        ConversionError: the engine cannot load or run it.
        ConfigError: the inputs cannot be built (data shape mismatch, free axes without data),
            or no engine opens the file's suffix.
        MissingDependencyError: the engine for the file's suffix is not installed.
    """
    machine = describe_machine()
    threads = config.threads or default_threads(machine)
    session = open_runner(config.model_path, threads)
    feeds = plan_feeds(session.inputs, config.batch_size, data, str(config.model_path))
    latencies, power, rss = _timed(session, feeds, config, probe or detect_power_probe(), progress)
    score = _score(session, feeds, data, config) if data is not None and config.evaluate else None
    timed_s = float(latencies.sum()) / 1e9
    p50, p90, p99 = (float(v) for v in np.percentile(latencies / 1e6, [50, 90, 99]))
    accuracy = None if score is None else score.accuracy
    measurement = Measurement(
        model=str(config.model_path),
        engine=session.engine,
        provider=session.provider,
        batch_size=config.batch_size,
        runs=config.runs,
        latency_ms=Latency(p50, p90, p99),
        throughput_per_s=config.batch_size * config.runs / timed_s,
        peak_rss_mb=rss,
        size_bytes=session.size_bytes,
        accuracy=accuracy,
        accuracy_split=score.split if score is not None and accuracy is not None else None,
        power_w=power.watts,
        power_source=power.source,
        cpu=machine.cpu_model,
        threads=threads,
    )
    return BenchReport(
        measurement=measurement,
        warmup=config.warmup,
        rss_scope=rss_scope,
        inputs=feeds.description,
        input_shapes=feeds.shapes,
        timed_s=timed_s,
        roc_auc=None if score is None else score.roc_auc,
        roc_auc_split=None if score is None or score.roc_auc is None else score.split,
        accuracy_note=_accuracy_note(data, score),
        engine_version=session.engine_version,
        machine=machine,
    )


def run_benchmark(
    model_path: str | Path,
    *,
    batch_size: int = 1,
    runs: int = 200,
    warmup: int = 20,
    threads: int | None = None,
    data: Dataset | None = None,
    split_name: str | None = None,
    isolate: bool = False,
    evaluate: bool = True,
    progress: Progress | None = None,
) -> BenchReport:
    """Benchmark ``model_path`` and say how (see :func:`benchmark` for the arguments).

    ``evaluate=False`` feeds ``data`` as inputs without the accuracy pass.

    Raises:
        ConfigError: bad counts, a batch size the model cannot take, free non-batch axes
            without data, or data whose sample shape does not match the model input.
        NotFoundError: the model file does not exist.
        UntrustedArtifactError: the file is not a valid model.
        ConversionError: ONNX Runtime cannot load or run it, or the isolated worker died.
    """
    config = BenchConfig(
        model_path=Path(model_path),
        batch_size=batch_size,
        runs=runs,
        warmup=warmup,
        threads=threads,
        split_name=split_name,
        evaluate=evaluate,
    )
    if isolate:
        from edgeloop.bench.worker import run_isolated

        return run_isolated(config, data, progress)
    return measure(config, data, RssScope.PROCESS, progress)


def benchmark(
    model_path: str | Path,
    *,
    batch_size: int = 1,
    runs: int = 200,
    warmup: int = 20,
    threads: int | None = None,
    data: Dataset | None = None,
    split_name: str | None = None,
    isolate: bool = False,
    progress: Progress | None = None,
) -> Measurement:
    """Warm up, then time ``runs`` runs of the model at ``batch_size`` (ONNX with ONNX Runtime).

    ``threads`` defaults to the physical cores this process may use. With ``data``, batches
    are real samples (cycled) and accuracy is measured on all of ``data`` (named ``split_name``,
    default "NAME (all N samples)"); without it, inputs are synthetic. ``isolate=True`` measures
    in a fresh process so ``peak_rss_mb`` is that process's. ``progress(done, total)`` is called
    after each run.

    Raises:
        ConfigError, NotFoundError, UntrustedArtifactError, ConversionError: as
            :func:`run_benchmark`.
    """
    return run_benchmark(
        model_path,
        batch_size=batch_size,
        runs=runs,
        warmup=warmup,
        threads=threads,
        data=data,
        split_name=split_name,
        isolate=isolate,
        progress=progress,
    ).measurement


def _accuracy_note(data: Dataset | None, score: Score | None) -> str | None:
    if data is None:
        return "no data set given (--data): accuracy not measured"
    if score is None:
        return "accuracy pass skipped (evaluate=False): the data only fed the timed runs"
    return score.note


def _timed(
    session: Runner,
    feeds: Feeds,
    config: BenchConfig,
    probe: PowerProbe,
    progress: Progress | None,
) -> tuple[npt.NDArray[np.int64], PowerReading, float | None]:
    """Warm up, then time the runs: (nanoseconds per run, power over them, peak RSS after)."""
    total = config.warmup + config.runs
    _run_many(session, feeds, range(config.warmup), None, progress, total)
    latencies = np.empty(config.runs, dtype=np.int64)
    probe.start()
    _run_many(session, feeds, range(config.warmup, total), latencies, progress, total)
    power = probe.stop()
    return latencies, power, peak_rss_mb()


def _run_many(
    session: Runner,
    feeds: Feeds,
    indices: range,
    latencies: npt.NDArray[np.int64] | None,
    progress: Progress | None,
    total: int,
) -> None:
    """Run the model once per index; record each ``session.run``'s duration when asked."""
    gc_was_on = gc.isenabled()
    gc.disable()  # a collector pause inside a timed run is the collector's latency, not the model's
    try:
        for slot, index in enumerate(indices):
            batch = feeds.batch(index)
            start = time.perf_counter_ns()
            _run(session, batch, feeds)
            stop = time.perf_counter_ns()
            if latencies is not None:
                latencies[slot] = stop - start
            if progress is not None:
                progress(index + 1, total)
    finally:
        if gc_was_on:
            gc.enable()


def _run(session: Runner, batch: dict[str, npt.NDArray[Any]], feeds: Feeds) -> list[Any]:
    try:
        return session.run(batch)
    except ConversionError as exc:
        raise ConversionError(f"running {feeds.model!r}: {exc.message}", hint=exc.hint) from exc


def _score(session: Runner, feeds: Feeds, data: Dataset, config: BenchConfig) -> Score:
    """Run every sample of ``data`` once (untimed) and score the first output."""
    outputs = [_run(session, batch, feeds)[0][:count] for batch, count in feeds.full_pass()]
    split = config.split_name or f"{data.name} (all {len(data)} samples)"
    return score_outputs(
        np.concatenate(outputs), data.x, data.y, data.task, data.num_classes, split
    )
