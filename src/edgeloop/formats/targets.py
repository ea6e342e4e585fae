"""The built-in conversion targets, registered on import (see :mod:`edgeloop.formats.convert`)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edgeloop.core.errors import ConversionError, EdgeError, ParityError
from edgeloop.formats.bundle import pack, size_of
from edgeloop.formats.convert import Converted, ConvertSource, Exporter, register
from edgeloop.formats.parity import Predict

Done = dict[str, Converted]
F32 = npt.NDArray[np.float32]


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def one_at_a_time(predict: Predict) -> Predict:
    """Run a batch-1 model on a batch, one sample per call."""

    def run(x: F32) -> F32:
        return np.concatenate([predict(x[i : i + 1]) for i in range(len(x))])

    return run


def _tflite(source: ConvertSource, out: Path, int8: bool) -> Converted:
    from edgeloop.formats.onnx_torch import program_for
    from edgeloop.formats.tflite import (
        litert_predictor,
        produce_tflite,
        produce_tflite_program,
        read_ops,
    )

    target = "tflite-int8" if int8 else "tflite"
    path = out / f"{source.name}{'.int8' if int8 else ''}.tflite"
    origin: dict[str, Any] = {"from": "the torch checkpoint"}
    if source.module is not None:
        report = produce_tflite(source.module, source.calibration, path, int8=int8)
    else:
        program, origin = program_for(source, out)
        label = f"{source.onnx.name} (via onnx2torch)"
        report = produce_tflite_program(program, source.calibration, path, int8=int8, label=label)
    ops = read_ops(path)
    notes = [] if source.module is not None else [f"made from {origin['from']} (no checkpoint)"]
    if int8 and ops.float_ops:
        notes.append(
            f"{len(ops.float_ops)} of {len(ops.ops)} ops compute in float: "
            f"{', '.join(ops.float_ops)} (after the last integer op)"
        )
    return Converted(
        target=target,
        format="tflite",
        files=(path,),
        artifact=path,
        size_bytes=path.stat().st_size,
        ran_on=f"litert {_version('ai-edge-litert')}",
        not_run=None,
        tools={
            **report["tools"],
            **origin.get("tools", {}),
            "ai-edge-litert": _version("ai-edge-litert"),
        },
        details={
            **ops.to_dict(),
            "quantization": "PT2E static int8, per-channel weights" if int8 else "none (fp32)",
            "calibration_samples": report["calibration_samples"],
            "origin": origin,
        },
        notes=tuple(notes),
        predict=litert_predictor(path),
    )


def _tflite_fp32(source: ConvertSource, out: Path, done: Done) -> Converted:
    return _tflite(source, out, int8=False)


def _tflite_int8(source: ConvertSource, out: Path, done: Done) -> Converted:
    return _tflite(source, out, int8=True)


def _tflm(source: ConvertSource, out: Path, done: Done) -> Converted:
    from edgeloop.formats.c_array import c_identifier, write_c_array
    from edgeloop.formats.parity import measure_parity
    from edgeloop.formats.tflm_check import min_arena, tflm_predictor, tflm_version

    int8 = done["tflite-int8"]
    data = int8.artifact.read_bytes()
    arena = min_arena(data, int8.artifact.name)
    predict = tflm_predictor(data, arena)
    if int8.predict is None:
        raise ConversionError(f"{int8.artifact.name} did not run in LiteRT; nothing to compare")
    agreement = measure_parity(int8.predict, predict, source.x_check, split=source.split)
    if agreement.top1_agreement is not None and agreement.top1_agreement < 1.0:
        raise ParityError(
            f"TFLM and LiteRT disagree on top-1 for "
            f"{round((1 - agreement.top1_agreement) * agreement.samples)} of "
            f"{agreement.samples} {source.split} samples",
            max_abs_diff=agreement.max_abs_diff,
            top1_agreement=agreement.top1_agreement,
            tolerance=0.0,
            hint="the INT8 model depends on a kernel whose TFLM and LiteRT versions differ",
        )
    symbol = c_identifier(f"{source.name}_int8")
    note = f"TFLM arena measured with tflite-micro {tflm_version()}."
    c = write_c_array(int8.artifact, out / "tflm", symbol, arena, note)
    artifact = pack([c.source, c.header], out / f"{source.name}.tflm.tar")
    return Converted(
        target="tflm",
        format="c_array",
        files=(c.source, c.header),
        artifact=artifact,
        size_bytes=c.model_bytes,
        ran_on=f"tflm reference kernels (tflite-micro {tflm_version()})",
        not_run=None,
        tools={"tflite-micro": tflm_version()},
        details={
            "symbol": symbol,
            "flash_bytes": c.model_bytes,
            "arena_bytes": arena,
            "alignment": 16,
            "tflm_vs_litert": agreement.to_dict(),
        },
        predict=predict,
    )


def _openvino(source: ConvertSource, out: Path, done: Done) -> Converted:
    from edgeloop.formats.openvino_ir import convert_to_ir, openvino_predictor

    xml, bin_ = convert_to_ir(source.onnx, out / "openvino" / f"{source.name}.xml")
    runner = openvino_predictor(xml)
    artifact = pack([xml, bin_], out / f"{source.name}.openvino.tar")
    return Converted(
        target="openvino",
        format="openvino",
        files=(xml, bin_),
        artifact=artifact,
        size_bytes=size_of([xml, bin_]),
        ran_on=f"openvino {runner.version} CPU ({runner.precision} inference precision)",
        not_run=None,
        tools={"openvino": runner.version},
        details={"weights_saved_as": "f32", "inference_precision": runner.precision},
        notes=(f"the CPU plugin chose {runner.precision}; weights are stored in f32",),
        predict=runner.predict,
    )


def _coreml(source: ConvertSource, out: Path, done: Done) -> Converted:
    from edgeloop.formats.coreml import NOT_RUN, convert_program_to_coreml, convert_to_coreml
    from edgeloop.formats.onnx_torch import program_for

    package = out / f"{source.name}.mlpackage"
    if package.exists():
        shutil.rmtree(package)
    origin: dict[str, Any] = {"from": "the torch checkpoint"}
    if source.module is not None:
        spec = convert_to_coreml(source.module, source.x_check, package)
    else:
        program, origin = program_for(source, out)
        spec = convert_program_to_coreml(program, source.x_check, package)
    artifact = pack([package], out / f"{source.name}.mlpackage.tar")
    return Converted(
        target="coreml",
        format="coreml",
        files=(package,),
        artifact=artifact,
        size_bytes=size_of([package]),
        ran_on=None,
        not_run=NOT_RUN,
        tools={"coremltools": _version("coremltools"), **origin.get("tools", {})},
        details={**spec.to_dict(), "origin": origin},
        notes=() if source.module is not None else (f"made from {origin['from']} (no checkpoint)",),
    )


def _tensorrt(source: ConvertSource, out: Path, done: Done) -> Converted:
    from edgeloop.formats.handoff import (
        TENSORRT_OPSET,
        TENSORRT_STEP,
        check_tensorrt_onnx,
        export_static_onnx,
        fix_batch,
    )
    from edgeloop.formats.onnx_info import inspect_onnx
    from edgeloop.formats.parity import onnx_predictor

    path = out / f"{source.name}.tensorrt.onnx"
    opset = inspect_onnx(source.onnx).opset
    if source.module is not None:
        export_static_onnx(source.module, source.x_check, path)
        origin = f"re-exported from torch at opset {TENSORRT_OPSET}, batch 1"
    elif opset <= TENSORRT_OPSET:
        fix_batch(source.onnx, path)
        origin = "the parent ONNX with its batch axis fixed to 1"
    else:
        export_static_onnx(_rebuilt(source, out, opset), source.x_check, path)
        origin = (
            f"the parent (opset {opset}) rebuilt by onnx2torch and re-exported at opset "
            f"{TENSORRT_OPSET}, batch 1"
        )
    checked = check_tensorrt_onnx(path)
    return Converted(
        target="tensorrt",
        format="onnx",
        files=(path,),
        artifact=path,
        size_bytes=path.stat().st_size,
        ran_on=f"onnxruntime {_version('onnxruntime')} (the hand-off file; not TensorRT)",
        not_run=TENSORRT_STEP.format(file=path.name, stem=path.stem),
        tools={"onnx": _version("onnx")},
        details={**checked, "origin": origin, "static_shapes": True},
        predict=one_at_a_time(onnx_predictor(path)),
    )


def _rebuilt(source: ConvertSource, out: Path, opset: int) -> Any:
    """The parent above opset 17 as a torch module (onnx2torch), to re-export at opset 17."""
    from edgeloop.formats.handoff import TENSORRT_OPSET
    from edgeloop.formats.onnx_torch import load_program_module, program_for

    try:
        return load_program_module(program_for(source, out)[0])
    except EdgeError as exc:
        raise ConversionError(
            f"{source.onnx.name} is at opset {opset}; the TensorRT hand-off uses opset "
            f"{TENSORRT_OPSET}, and rebuilding it through onnx2torch failed: {exc.message}",
            hint=f"give --checkpoint DIR: edgeloop re-exports the model at opset {TENSORRT_OPSET}",
        ) from exc


def _edgetpu(source: ConvertSource, out: Path, done: Done) -> Converted:
    from edgeloop.formats.handoff import EDGETPU_STEP

    int8 = done["tflite-int8"]
    path = out / f"{source.name}.edgetpu-input.tflite"
    shutil.copyfile(int8.artifact, path)
    on_cpu = int8.details.get("float_ops", [])
    return Converted(
        target="edgetpu",
        format="tflite",
        files=(path,),
        artifact=path,
        size_bytes=path.stat().st_size,
        ran_on=int8.ran_on and f"{int8.ran_on} (the compiler's input; not the Edge TPU)",
        not_run=EDGETPU_STEP.format(file=path.name, stem=path.stem),
        tools=dict(int8.tools),
        details={"ops": int8.details.get("kinds", []), "ops_left_on_cpu": on_cpu},
        notes=(
            f"float ops stay on the CPU after compilation: {', '.join(on_cpu)}"
            if on_cpu
            else "every op is integer",
        ),
        predict=int8.predict,
    )


def _missing_module(module: str, extra: str) -> Callable[[], str | None]:
    def missing() -> str | None:
        if importlib.util.find_spec(module) is not None:
            return None
        return f"{module} is not installed (pip install 'edgeloop[{extra}]')"

    return missing


def _missing_tflite() -> str | None:
    from edgeloop.formats.tflite import converter_python

    try:
        converter_python()
    except EdgeError as exc:
        return f"no TFLite converter environment: {exc.hint}"
    return _missing_module("ai_edge_litert", "tflite")()


def _tensorrt_refuses(onnx: Path, has_module: bool) -> str | None:
    from edgeloop.formats.handoff import TENSORRT_OPSET
    from edgeloop.formats.onnx_info import inspect_onnx
    from edgeloop.formats.onnx_torch import why_not_foreign

    opset = inspect_onnx(onnx).opset
    if has_module or opset <= TENSORRT_OPSET or (why := why_not_foreign(onnx)) is None:
        return None
    return (
        f"the parent is at opset {opset} and the TensorRT hand-off uses opset {TENSORRT_OPSET}; "
        f"rebuilding it at opset {TENSORRT_OPSET} needs onnx2torch ({why})"
    )


for _exporter in (
    Exporter(
        "tflite",
        "tflite",
        "tflite-convert",
        "TFLite FP32 (runs in LiteRT)",
        _tflite_fp32,
        from_torch=True,
        missing=_missing_tflite,
    ),
    Exporter(
        "tflite-int8",
        "tflite",
        "tflite-convert",
        "TFLite full-INT8 (LiteRT)",
        _tflite_int8,
        from_torch=True,
        missing=_missing_tflite,
    ),
    Exporter(
        "tflm",
        "c_array",
        "tflm",
        "TFLite Micro C array + header, checked on TFLM kernels",
        _tflm,
        needs=("tflite-int8",),
        missing=_missing_module("tflite_micro", "tflm"),
    ),
    Exporter(
        "openvino",
        "openvino",
        "openvino",
        "OpenVINO IR (runs on CPU)",
        _openvino,
        missing=_missing_module("openvino", "openvino"),
    ),
    Exporter(
        "coreml",
        "coreml",
        "coreml",
        "Core ML .mlpackage (not run: needs macOS)",
        _coreml,
        from_torch=True,
        missing=_missing_module("coremltools", "coreml"),
    ),
    Exporter(
        "tensorrt",
        "onnx",
        "train",
        "TensorRT hand-off: static ONNX, opset 17",
        _tensorrt,
        refuses=_tensorrt_refuses,
    ),
    Exporter(
        "edgetpu",
        "tflite",
        "tflite-convert",
        "Edge TPU hand-off: full-INT8 .tflite for edgetpu_compiler",
        _edgetpu,
        needs=("tflite-int8",),
    ),
):
    register(_exporter)
