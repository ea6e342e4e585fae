"""Publish a conversion's outputs to the registry, each with lineage to its ONNX parent.

Each output becomes the version ``NAME-TARGET`` whose manifest carries the tensors the output
itself declares, its parity against the parent, and the timings measured here (batch 1, one
thread, no power meter).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgeloop.core.settings import Settings
from edgeloop.core.types import Manifest, Measurement, ModelRef, TensorSpec
from edgeloop.formats.convert import Converted
from edgeloop.pipeline.convert import ConversionReport, Timing

if TYPE_CHECKING:
    from edgeloop.registry import Registry

POWER_NOTE = "not measured: conversion timings run without a power meter"


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
        profile, parent_input = _parent_profile(registry, parent)
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
            carried = profile if inputs and inputs[0] == parent_input else None
            refs[r.target] = str(registry.publish(r.artifact, manifest, profile=carried).ref)
    return parent, refs


def _parent_profile(registry: Registry, parent: ModelRef) -> tuple[bytes | None, TensorSpec | None]:
    """The parent version's drift reference (None: it has none) and its first input.

    A converted output that takes the very same first input (name, shape, dtype) is monitored
    with the parent's reference; one that takes another (a full-INT8 .tflite takes int8
    values) gets none, since the reference describes float inputs it never sees.
    """
    version, path = registry.profile(parent)
    inputs = version.manifest.inputs
    return (None if path is None else path.read_bytes()), (inputs[0] if inputs else None)


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
