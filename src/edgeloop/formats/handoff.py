"""Hand-offs to vendor toolchains that cannot run here: TensorRT and the Edge TPU compiler.

edgeloop produces exactly the input each vendor step needs, checks what can be checked without
the vendor's tool, and records the vendor step as "not run here" — never as done:

- TensorRT: an ONNX file with static shapes (batch fixed) at opset 17, the newest opset that
  TensorRT 8.6 (JetPack 6's TensorRT on Jetson Orin) parses, with only standard ONNX ops (a
  custom-domain op would need a TensorRT plugin). Then ``trtexec`` builds the engine on the
  device.
- Edge TPU: the full-INT8 ``.tflite``; ``edgetpu_compiler`` maps integer ops to the Edge TPU and
  leaves float ops (and everything after the first one) on the CPU, so they are listed.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from edgeloop.core.errors import ConversionError, require

if TYPE_CHECKING:
    import torch

TENSORRT_OPSET = 17
TENSORRT_STEP = (
    "not run here: building the TensorRT engine needs an NVIDIA GPU with TensorRT; on the "
    "device run `trtexec --onnx={file} --saveEngine={stem}.engine --fp16`"
)
EDGETPU_STEP = (
    "not run here: the Edge TPU compiler is Coral's tool (Debian package edgetpu-compiler, "
    "x86-64 Linux); run `edgetpu_compiler {file}` and deploy {stem}_edgetpu.tflite"
)


def check_tensorrt_onnx(path: Path) -> dict[str, object]:
    """Check ``path`` is what TensorRT's ONNX parser takes: standard ops, opset, static shapes.

    Raises:
        ConversionError: a custom-domain operator (named), a newer opset, or a free axis.
    """
    import onnx

    model = onnx.load(str(path))
    custom = sorted({f"{n.domain}.{n.op_type}" for n in model.graph.node if n.domain})
    if custom:
        raise ConversionError(
            f"{path.name} uses operators outside the standard ONNX domain: {', '.join(custom)}; "
            "TensorRT's ONNX parser has no kernel for them",
            hint="replace them with standard ONNX ops, or write a TensorRT plugin for each",
        )
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset > TENSORRT_OPSET:
        raise ConversionError(
            f"{path.name} is at opset {opset}; the TensorRT hand-off uses opset {TENSORRT_OPSET}",
            hint="give --checkpoint so edgeloop re-exports the model at opset 17",
        )
    free = [
        vi.name
        for vi in list(model.graph.input) + list(model.graph.output)
        if any(not d.dim_value for d in vi.type.tensor_type.shape.dim)
    ]
    if free:
        raise ConversionError(f"{path.name}: tensors {free} still have free axes")
    return {"opset": opset, "ops": sorted({n.op_type for n in model.graph.node})}


def export_static_onnx(
    module: torch.nn.Module, example: npt.NDArray[np.float32], out: Path
) -> Path:
    """Export ``module`` at opset 17 with batch 1 and no free axis.

    torch's TorchScript-based exporter is used here on purpose: the default (dynamo) exporter
    starts at opset 18 and cannot lower ``ReduceMean`` back to 17, while this one writes opset
    17 directly (pooling as ``GlobalAveragePool``, which TensorRT fuses well).

    Raises:
        ConversionError: the exporter failed (its first line is carried).
    """
    torch = require("torch", "train", "Exporting a static ONNX file for TensorRT")
    x = torch.from_numpy(np.ascontiguousarray(example[:1], dtype=np.float32))
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module.eval(),
                (x,),
                str(out),
                opset_version=TENSORRT_OPSET,
                dynamo=False,
                input_names=["input"],
                output_names=["output"],
            )
    except Exception as exc:
        text = str(exc).strip().splitlines()
        raise ConversionError(
            f"static ONNX export of {type(module).__name__} at opset {TENSORRT_OPSET} failed: "
            f"{text[0] if text else type(exc).__name__}"
        ) from exc
    return out


def fix_batch(path: Path, out: Path, batch: int = 1) -> Path:
    """Copy the ONNX at ``path`` to ``out`` with the batch axis of inputs and outputs fixed."""
    import onnx

    model = onnx.load(str(path))
    for vi in list(model.graph.input) + list(model.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if dims and not dims[0].dim_value:
            dims[0].ClearField("dim_param")
            dims[0].dim_value = batch
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out))
    return out
