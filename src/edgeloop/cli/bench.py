"""``edgeloop bench MODEL``: latency, throughput, memory, size, accuracy and power.

MODEL is an ``.onnx`` file (ONNX Runtime), a ``.tflite`` (LiteRT) or an OpenVINO IR ``.xml``:
every artifact ``edgeloop convert`` makes that runs here can be measured the same way.

JSON output is the DESIGN's bench object for ``--batch-size`` (default 1); with a batch size
above 1 the batch-1 measurement of the same run is added under ``"batch1"``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from edgeloop.cli.output import OutputFormat, emit, err_console, na
from edgeloop.data.dataset import Dataset

if TYPE_CHECKING:
    from edgeloop.bench.report import BenchReport

_BAR_AFTER_S = 2.0  # a bar for anything slower; quick runs print nothing but the result


class _LazyBar:
    """A progress bar on stderr that appears only once a measurement has run ``_BAR_AFTER_S``."""

    def __init__(self, label: str) -> None:
        self._label = label
        self._started = time.monotonic()
        self._bar: Progress | None = None
        self._task: Any = None

    def __call__(self, done: int, total: int) -> None:
        if self._bar is None:
            if time.monotonic() - self._started < _BAR_AFTER_S:
                return
            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=err_console,
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task(self._label, total=total)
        self._bar.update(self._task, completed=done, total=total)

    def __enter__(self) -> _LazyBar:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.stop()


def bench(
    model: Annotated[
        str,
        typer.Argument(
            help="The model to measure: an .onnx, .tflite or OpenVINO .xml file, or a registry "
            "ref NAME[:VERSION]."
        ),
    ],
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            help="Real inputs and accuracy: a bundled data set (digits, ...) or a path.",
        ),
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", help="Batch size measured besides batch 1.")
    ] = 1,
    runs: Annotated[int, typer.Option("--runs", help="Timed runs per batch size.")] = 200,
    warmup: Annotated[int, typer.Option("--warmup", help="Untimed runs before timing.")] = 20,
    threads: Annotated[
        int | None,
        typer.Option("--threads", help="Engine intra-op threads (default: the physical cores)."),
    ] = None,
    split: Annotated[
        str,
        typer.Option(
            "--split",
            help="Which samples of --data to measure on: 'test' (the held-out split the other "
            "commands use, 15 %% with --seed) or 'all'.",
        ),
    ] = "test",
    seed: Annotated[int, typer.Option("--seed", help="Split seed (as in train/export).")] = 0,
    home: Annotated[
        Path | None, typer.Option("--home", help="edgeloop home for a registry ref.")
    ] = None,
    isolate: Annotated[
        bool,
        typer.Option(
            "--isolate/--no-isolate",
            help="Measure in a fresh process, so peak RSS is the model's, not this CLI's.",
        ),
    ] = True,
    format: Annotated[
        OutputFormat, typer.Option("--format", help="table or json")
    ] = OutputFormat.TABLE,
) -> None:
    """Warm up, time N runs at batch 1 and --batch-size, and report what was measured."""
    from edgeloop.bench import run_benchmark
    from edgeloop.core.settings import Settings
    from edgeloop.data.loaders import load_data
    from edgeloop.registry.resolve import resolve_runnable

    path, version = resolve_runnable(model, Settings.load(home))
    label = str(path) if version is None else str(version.ref)
    dataset = _pick_split(load_data(data), split, seed) if data is not None else None
    sizes = _batch_sizes(path, batch_size)
    reports: list[BenchReport] = []
    for size in sizes:
        err_console.print(
            f"benchmarking {label} at batch {size}: {warmup} warm-up + {runs} timed runs",
            highlight=False,
        )
        with _LazyBar(f"batch {size}") as bar:
            reports.append(
                run_benchmark(
                    path,
                    batch_size=size,
                    runs=runs,
                    warmup=warmup,
                    threads=threads,
                    data=dataset,
                    split_name=None
                    if dataset is None
                    else f"{dataset.name}, {len(dataset)} samples",
                    isolate=isolate,
                    # Accuracy does not depend on the batch size: measure it once, at --batch-size.
                    evaluate=size == batch_size,
                    progress=bar,
                )
            )
    if version is not None:  # name the version measured, not its checkout link
        reports = [replace(r, measurement=replace(r.measurement, model=label)) for r in reports]
    if len(reports) > 1 and dataset is not None:
        note = f"accuracy does not depend on the batch size: measured once, at batch {batch_size}"
        reports[0] = replace(reports[0], accuracy_note=note)
    result = reports[-1].to_dict()
    result["ref"] = None if version is None else label
    if len(reports) > 1:
        result["batch1"] = reports[0].to_dict()
    emit(result, format, lambda console: _render(console, reports))


def _pick_split(dataset: Dataset, split: str, seed: int) -> Dataset:
    """The held-out test split by default: accuracy on training samples flatters a model."""
    from edgeloop.core.errors import ConfigError
    from edgeloop.data import stratified_split

    if split == "all":
        return dataset
    if split != "test":
        raise ConfigError(f"--split {split!r} is not one of: test, all")
    test = stratified_split(dataset, val=0.15, test=0.15, seed=seed).test
    return test.with_arrays(test.x, test.y, name=f"{dataset.name} test split (seed {seed})")


def _batch_sizes(model: Path, batch_size: int) -> list[int]:
    """Batch 1 and ``batch_size``; just ``batch_size`` when the batch axis is fixed to it."""
    from edgeloop.bench.runner import model_inputs

    if batch_size == 1:
        return [1]
    first_axes = {spec.shape[0] for spec in model_inputs(model) if spec.shape}
    if first_axes == {batch_size}:
        err_console.print(
            f"{model} has a fixed batch axis of {batch_size}: batch 1 cannot be measured",
            highlight=False,
        )
        return [batch_size]
    return [1, batch_size]


def _render(console: Console, reports: list[BenchReport]) -> None:
    first = reports[-1]
    m = first.measurement
    table = Table(title=escape(f"{m.model} on {m.cpu}"), title_justify="left")
    table.add_column("figure")
    for report in reports:
        table.add_column(f"batch {report.measurement.batch_size}", justify="right")
    rows: list[tuple[str, Callable[[BenchReport], str]]] = [
        ("latency p50 (ms)", lambda r: f"{r.measurement.latency_ms.p50:.4f}"),
        ("latency p90 (ms)", lambda r: f"{r.measurement.latency_ms.p90:.4f}"),
        ("latency p99 (ms)", lambda r: f"{r.measurement.latency_ms.p99:.4f}"),
        ("throughput (samples/s)", lambda r: f"{r.measurement.throughput_per_s:,.1f}"),
        ("timed runs (+ warm-up)", lambda r: f"{r.measurement.runs} (+{r.warmup})"),
        ("peak RSS (MiB)", lambda r: na(r.measurement.peak_rss_mb, "{:.1f}") + f" ({r.rss_scope})"),
        ("power (W)", lambda r: na(r.measurement.power_w, "{:.2f}")),
    ]
    for label, cell in rows:
        table.add_row(label, *(cell(r) for r in reports))
    console.print(table)
    console.print(
        f"engine     {m.engine} {first.engine_version} ({m.provider}, {m.threads} threads)"
    )
    console.print(f"size       {m.size_bytes:,} bytes")
    console.print(f"inputs     {escape(first.inputs)}", highlight=False)
    console.print(f"accuracy   {escape(_quality(first))}", highlight=False)
    console.print(f"power      {escape(m.power_source)}", highlight=False)


def _quality(report: BenchReport) -> str:
    m = report.measurement
    if m.accuracy is not None:
        return f"{m.accuracy:.2%} on {m.accuracy_split}"
    if report.roc_auc is not None:
        return f"ROC-AUC {report.roc_auc:.4f} on {report.roc_auc_split} ({report.accuracy_note})"
    return f"n/a: {report.accuracy_note}"
