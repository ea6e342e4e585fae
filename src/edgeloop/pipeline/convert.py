"""The convert stage: a parent model to edge targets, timed where they run, fit checked.

The steps around :func:`edgeloop.formats.convert.convert`: load the data the conversion
calibrates and verifies on (the parent's split), time each output that runs on this machine
(batch 1, warm-up first, one thread) beside the parent on ONNX Runtime, and check the fit against
a device profile. :mod:`edgeloop.pipeline.convert_publish` then publishes each output as a
registry version whose parent is the ONNX model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeloop.core.errors import ConfigError
from edgeloop.core.settings import Settings
from edgeloop.core.types import Latency, ModelRef
from edgeloop.formats.convert import Converted, ConvertSource
from edgeloop.formats.devices import DeviceProfile, FitCheck, check_fit
from edgeloop.formats.parity import Predict


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


def available_targets(
    *, has_module: bool, onnx: Path | None = None
) -> tuple[list[str], dict[str, str]]:
    """The targets this machine can make from ``onnx`` (and the torch module when
    ``has_module``), and for each other one why not (:func:`edgeloop.formats.convert.why_not`
    decides)."""
    from edgeloop.formats.convert import exporters, why_not

    chosen: list[str] = []
    skipped: dict[str, str] = {}
    for exp in exporters():
        reason = why_not(exp.name, has_module=has_module, onnx=onnx)
        if reason is None:
            chosen.append(exp.name)
        else:
            skipped[exp.name] = reason
    return chosen, skipped


@dataclass(frozen=True)
class ConvertStageResult:
    """The convert stage: the conversion (or the error that stopped it), the registry refs of
    its outputs, and each target not produced with the reason."""

    report: ConversionReport | None
    refs: dict[str, str]
    missing: dict[str, str]
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"targets": [], "skipped": dict(self.missing), "error": self.error}
        if self.report is not None:
            full = self.report.to_dict()
            body["split"] = full["split"]
            body["parent"] = full["parent"]
            body["targets"] = [
                {**row, "registered": self.refs.get(row["target"])} for row in full["targets"]
            ]
        return {"convert": body}


def convert_stage(
    onnx: Path,
    checkpoint: Path | None,
    data: str,
    seed: int,
    parent: ModelRef,
    settings: Settings,
    out_dir: Path,
    *,
    runs: int,
    name: str,
) -> ConvertStageResult:
    """Every target whose converter is installed, verified, timed and registered under
    ``parent``; a missing converter or a failed conversion is reported, never raised."""
    from edgeloop.core.errors import EdgeError
    from edgeloop.pipeline.convert_publish import register_results

    targets, missing = available_targets(has_module=checkpoint is not None, onnx=onnx)
    try:
        source = load_source(onnx, data, seed, checkpoint, name=name)
        report = run_conversion(source, targets, out_dir, runs=runs)
        _, refs = register_results(report, name, parent, settings)
    except EdgeError as exc:
        return ConvertStageResult(None, {}, missing, f"{type(exc).__name__}: {exc.message}")
    return ConvertStageResult(report, refs, missing)
