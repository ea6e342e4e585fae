"""Convert a parent model to edge targets, time what runs here, check device fit, register.

The steps around :func:`edgeloop.formats.convert.convert`: load the data the conversion
calibrates and verifies on (the parent's split), time each output that runs on this machine
(batch 1, warm-up first, one thread) beside the parent on ONNX Runtime, check the fit against a
device profile, and publish each output as a registry version whose parent is the ONNX model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeloop.core.errors import ConfigError
from edgeloop.core.settings import Settings
from edgeloop.core.types import Latency, Manifest, Measurement, ModelRef, TensorSpec
from edgeloop.formats.convert import Converted, ConvertSource
from edgeloop.formats.devices import DeviceProfile, FitCheck, check_fit
from edgeloop.formats.parity import Predict

POWER_NOTE = "not measured: conversion timings run without a power meter"
# Targets a device profile names that are the parent itself rather than a conversion.
PARENT_TARGETS = ("onnx",)


@dataclass(frozen=True)
class Timing:
    """One timed engine set-up: batch 1, ``runs`` runs after warm-up, one thread."""

    label: str
    latency: Latency
    throughput: float
    runs: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "engine": self.label,
            "latency_ms": self.latency.to_dict(),
            "throughput_per_s": self.throughput,
            "runs": self.runs,
            "batch_size": 1,
            "threads": 1,
        }


@dataclass(frozen=True)
class ConversionReport:
    """Every target produced, its checks and timings, the parent's timing, fit and registry refs."""

    model: Path
    split: str
    parent_timing: Timing
    results: tuple[Converted, ...]
    timings: dict[str, tuple[Timing, ...]]
    fit: FitCheck | None = None
    registered: dict[str, str] = field(default_factory=dict)
    parent_ref: ModelRef | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": str(self.model),
            "split": self.split,
            "parent": self.parent_timing.to_dict(),
            "targets": [
                {
                    **r.to_dict(),
                    "bench": [t.to_dict() for t in self.timings.get(r.target, ())],
                    "registered": self.registered.get(r.target),
                }
                for r in self.results
            ],
            "device": None if self.fit is None else self.fit.to_dict(),
            "parent_ref": None if self.parent_ref is None else str(self.parent_ref),
        }


def load_source(
    onnx: Path,
    data: str,
    seed: int,
    checkpoint: Path | None,
    *,
    name: str | None = None,
    calibration: int = 1000,
) -> ConvertSource:
    """The parent, its torch module (when ``checkpoint``), and the split it was trained on.

    Calibration uses up to ``calibration`` training samples; verification the test split.
    """
    from edgeloop.data import load_data, stratified_split

    splits = stratified_split(load_data(data), val=0.15, test=0.15, seed=seed)
    module = None
    if checkpoint is not None:
        from edgeloop.training.checkpoint import load_checkpoint
        from edgeloop.training.zoo import deployable

        trained, arch = load_checkpoint(checkpoint)
        module = deployable(trained, arch)
    return ConvertSource(
        onnx=onnx,
        name=name or onnx.stem,
        calibration=splits.train.x[:calibration],
        x_check=splits.test.x,
        y_check=splits.test.y,
        split=f"{splits.test.name} test ({len(splits.test)} samples)",
        module=module,
    )


def targets_for(profile: DeviceProfile) -> list[str]:
    """The conversion ``profile`` prefers: its first target that is a conversion."""
    from edgeloop.formats.convert import exporters

    known = {e.name for e in exporters()}
    chosen = [t for t in profile.targets if t in known]
    if not chosen:
        raise ConfigError(f"device {profile.name!r} takes none of the conversion targets")
    return chosen[:1]


def fit_of(profile: DeviceProfile, result: Converted) -> FitCheck:
    """Flash: the bytes the device stores. RAM: TFLM's measured arena on a microcontroller,
    else the model bytes held in memory (a lower bound: activations not counted)."""
    arena = result.details.get("arena_bytes")
    if profile.microcontroller:
        if arena is None:
            raise ConfigError(
                f"{profile.name} is a microcontroller; target {result.target!r} does not run on it",
                hint="convert with --to tflm",
            )
        return check_fit(
            profile,
            flash_needed=result.size_bytes,
            ram_needed=int(arena),
            ram_basis="TFLM arena, measured",
        )
    return check_fit(
        profile,
        flash_needed=result.size_bytes,
        ram_needed=result.size_bytes,
        ram_basis="model bytes loaded (lower bound)",
    )


def time_predict(label: str, predict: Predict, source: ConvertSource, runs: int) -> Timing:
    from edgeloop.optimize.engines import time_runs

    latency, throughput = time_runs(predict, source.x_check, 1, runs, min(20, runs))
    return Timing(label, latency, throughput, runs)


def bench_results(
    source: ConvertSource, results: Sequence[Converted], runs: int
) -> tuple[Timing, dict[str, tuple[Timing, ...]]]:
    """Time the parent on ONNX Runtime and each output that runs here (OpenVINO at f32 too)."""
    from edgeloop.formats.parity import onnx_predictor

    parent = time_predict("onnxruntime", onnx_predictor(source.onnx), source, runs)
    timings: dict[str, tuple[Timing, ...]] = {}
    for r in results:
        if r.predict is None or r.ran_on is None:
            continue
        rows = [time_predict(r.ran_on, r.predict, source, runs)]
        if r.target == "openvino":
            from edgeloop.formats.openvino_ir import openvino_predictor

            forced = openvino_predictor(r.files[0], precision="f32")
            rows.append(
                time_predict(f"openvino ({forced.precision}, forced)", forced.predict, source, runs)
            )
        timings[r.target] = tuple(rows)
    return parent, timings


def measurement(r: Converted, t: Timing, split: str) -> Measurement:
    from edgeloop.bench.machine import describe_machine

    return Measurement(
        model=r.artifact.name,
        engine=t.label,
        provider="cpu",
        batch_size=1,
        runs=t.runs,
        latency_ms=t.latency,
        throughput_per_s=t.throughput,
        peak_rss_mb=None,
        size_bytes=r.size_bytes,
        accuracy=r.accuracy,
        accuracy_split=None if r.accuracy is None else split,
        power_w=None,
        power_source=POWER_NOTE,
        cpu=describe_machine().cpu_model,
        threads=1,
    )


def register_results(
    report: ConversionReport, name: str, parent: ModelRef | None, settings: Settings
) -> tuple[ModelRef, dict[str, str]]:
    """Publish each output as ``NAME-TARGET`` with lineage to ``parent`` (published first if
    it is a file only). Returns the parent's ref and target -> ref."""
    from edgeloop.formats.onnx_info import inspect_onnx
    from edgeloop.registry import Registry

    info = inspect_onnx(report.model)
    refs: dict[str, str] = {}
    with Registry.open(settings) as registry:
        if parent is None:
            root = registry.publish(
                report.model,
                Manifest(name=name, format="onnx", inputs=info.inputs, outputs=info.outputs),
            )
            parent = root.ref
        for r in report.results:
            ms = tuple(measurement(r, t, report.split) for t in report.timings.get(r.target, ()))
            inputs, outputs = _specs(r, info.inputs, info.outputs)
            manifest = Manifest(
                name=f"{name}-{r.target}",
                format=r.format,
                inputs=inputs,
                outputs=outputs,
                recipe={
                    "target": r.target,
                    "ran_on": r.ran_on,
                    "not_run": r.not_run,
                    "details": r.details,
                    "notes": list(r.notes),
                },
                parity=r.parity,
                measurements=ms,
                tools=r.tools,
                parent=parent,
            )
            refs[r.target] = str(registry.publish(r.artifact, manifest).ref)
    return parent, refs


def _specs(
    r: Converted, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...]
) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """The tensors the output itself declares where a reader exists here (a full-INT8 .tflite
    takes int8), else the parent's."""
    if r.format == "tflite":
        from edgeloop.runtime.engine import SessionConfig
        from edgeloop.runtime.litert_engine import LiteRtEngine

        model = LiteRtEngine().load(r.artifact, SessionConfig(intra_op_threads=1))
        try:
            return model.inputs, model.outputs
        finally:
            model.close()
    if r.format == "onnx":
        from edgeloop.formats.onnx_info import inspect_onnx

        info = inspect_onnx(r.artifact)
        return info.inputs, info.outputs
    return inputs, outputs


def run_conversion(
    source: ConvertSource,
    targets: Sequence[str],
    out_dir: Path,
    *,
    runs: int = 200,
    device: DeviceProfile | None = None,
    on_target: Callable[[str], None] | None = None,
) -> ConversionReport:
    """Convert, verify and time; with ``device``, check the chosen target fits it.

    Raises:
        EdgeError: from the failing exporter; ConfigError when the model does not fit
            ``device`` (the message says what is short and by how much).
    """
    from edgeloop.formats.convert import convert

    results = convert(source, targets, out_dir, on_target=on_target)
    fit = None
    if device is not None:
        final = next(r for r in results if r.target == targets[-1])
        fit = fit_of(device, final)
        if not fit.fits:
            raise ConfigError(
                f"{final.target} of {source.name}: {fit.summary()}",
                hint="pick a device with more memory, or shrink the model "
                "(`edgeloop optimize`, `edgeloop tune --max-size-kb`)",
            )
    if on_target is not None:
        on_target("bench")
    parent, timings = bench_results(source, results, runs)
    return ConversionReport(source.onnx, source.split, parent, tuple(results), timings, fit)


def available_targets() -> tuple[list[str], dict[str, str]]:
    """The targets whose converters this machine has, and for each other one why not."""
    import importlib.util

    from edgeloop.core.errors import EdgeError
    from edgeloop.formats.convert import exporters
    from edgeloop.formats.tflite import converter_python

    needs = {
        "tflm": ("tflite_micro", "tflm"),
        "openvino": ("openvino", "openvino"),
        "coreml": ("coremltools", "coreml"),
    }
    litert = importlib.util.find_spec("ai_edge_litert") is not None
    try:
        converter_python()
        converter: str | None = None
    except EdgeError as exc:
        converter = f"no TFLite converter environment: {exc.hint}"
    chosen: list[str] = []
    skipped: dict[str, str] = {}
    for exp in exporters():
        module, extra = needs.get(exp.name, ("", ""))
        if module and importlib.util.find_spec(module) is None:
            skipped[exp.name] = f"{module} is not installed (pip install 'edgeloop[{extra}]')"
        elif exp.format == "tflite" or exp.name == "tflm":
            if converter is not None:
                skipped[exp.name] = converter
            elif not litert:
                skipped[exp.name] = (
                    "ai-edge-litert is not installed (pip install 'edgeloop[tflite]')"
                )
            else:
                chosen.append(exp.name)
        else:
            chosen.append(exp.name)
    return chosen, skipped


def convert_and_register(
    onnx: Path,
    checkpoint: Path,
    data: str,
    seed: int,
    targets: Sequence[str],
    skipped: dict[str, str],
    parent: ModelRef,
    settings: Settings,
    out_dir: Path,
    *,
    runs: int,
    name: str,
) -> dict[str, Any]:
    """The quickstart's convert stage as a JSON-able dict; a failure is reported, not raised."""
    from edgeloop.core.errors import EdgeError

    body: dict[str, Any] = {"targets": [], "skipped": dict(skipped), "error": None}
    try:
        source = load_source(onnx, data, seed, checkpoint, name=name)
        report = run_conversion(source, targets, out_dir, runs=runs)
        _, refs = register_results(report, name, parent, settings)
    except EdgeError as exc:
        body["error"] = f"{type(exc).__name__}: {exc.message}"
        return body
    full = report.to_dict()
    body["split"] = full["split"]
    body["parent"] = full["parent"]
    for row in full["targets"]:
        row["registered"] = refs.get(row["target"])
        body["targets"].append(row)
    return body
