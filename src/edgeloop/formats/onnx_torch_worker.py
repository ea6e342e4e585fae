"""Runs inside the converter environment: an ONNX file -> torch module (onnx2torch) -> .pt2.

A model made elsewhere comes as ONNX with no torch checkpoint. onnx2torch rebuilds it as a torch
``fx.GraphModule``; ``torch.export`` then saves it as a program (batch 1, the shape a device
runs) that the TFLite worker and coremltools take like a program exported from a checkpoint.

Like :mod:`edgeloop.formats.tflite_worker` this file is executed by path with the converter
environment's Python and imports nothing from edgeloop. Two things are added to onnx2torch here,
both with its own extension API (``add_converter`` and the registry it fills):

- shape-reading operators whose constant input is an initializer (Reshape's shape, Squeeze's
  axes, the Reduce ops' axes from opset 18) become modules holding Python ints. onnx2torch
  reads those tensors at run time, which ``torch.export`` cannot trace (the value decides an
  output shape, a "data-dependent" guard).
- onnx2torch imports torchvision for NonMaxSuppression and RoiAlign only; torchvision's wheels
  are built for one torch build each and the CPU build of torch 2.13 has none on the package
  index, so without torchvision those two operators are reported unsupported, not the import.

``--check`` prints the operators (domain, type, opset) onnx2torch has no converter for; the
conversion prints one JSON object on the last line of stdout; both exit 2 with the error on
stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import sys
import types
from typing import Any

NEEDS_TORCHVISION = ("NonMaxSuppression", "RoiAlign")
REDUCE_OPS = (
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceProd",
    "ReduceSum",
    "ReduceSumSquare",
)


def _import_onnx2torch() -> Any:
    if importlib.util.find_spec("torchvision") is None:
        # Only nms.py and roialign.py touch torchvision, at call time; the placeholder is
        # removed again once onnx2torch is imported so nothing else can mistake it for the real
        # package, and :func:`unsupported` lists those two ops.
        vision, ops = types.ModuleType("torchvision"), types.ModuleType("torchvision.ops")

        def absent(*args: object, **kwargs: object) -> None:
            raise RuntimeError("torchvision is not installed")

        ops.nms = ops.roi_align = ops.box_convert = absent  # type: ignore[attr-defined]
        vision.ops = ops  # type: ignore[attr-defined]
        sys.modules.update({"torchvision": vision, "torchvision.ops": ops})
        try:
            return importlib.import_module("onnx2torch")
        finally:
            sys.modules.pop("torchvision", None)
            sys.modules.pop("torchvision.ops", None)
    return importlib.import_module("onnx2torch")


def _static_converters(onnx2torch: Any) -> None:
    """Register converters that hold constant shapes and axes as Python ints (see above)."""
    import torch
    from torch import nn

    registry = importlib.import_module("onnx2torch.node_converters.registry")
    common = importlib.import_module("onnx2torch.utils.common")
    reduce = importlib.import_module("onnx2torch.node_converters.reduce")
    table = registry._CONVERTER_REGISTRY
    key = registry.OperationDescription

    class StaticReshape(nn.Module):
        def __init__(self, shape: list[int], allowzero: bool) -> None:
            super().__init__()
            self.shape, self.allowzero = shape, allowzero

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.allowzero:
                return torch.reshape(x, self.shape)
            return torch.reshape(x, [x.shape[i] if s == 0 else s for i, s in enumerate(self.shape)])

    class StaticSqueeze(nn.Module):
        def __init__(self, axes: list[int]) -> None:
            super().__init__()
            self.axes = axes

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for axis in sorted((a % x.dim() for a in self.axes), reverse=True):
                x = torch.squeeze(x, dim=axis)
            return x

    def constant(node: Any, graph: Any, index: int) -> list[int] | None:
        if len(node.input_values) <= index or not node.input_values[index]:
            return None
        try:
            return [
                int(v) for v in common.get_const_value(node.input_values[index], graph).tolist()
            ]
        except KeyError:
            return None

    def only_first(node: Any) -> Any:
        return common.OnnxMapping(inputs=(node.input_values[0],), outputs=node.output_values)

    def wrap(op: str, version: int, build: Any) -> None:
        original = table.get(key("", op, version))

        def convert(node: Any, graph: Any) -> Any:
            module = build(node, graph)
            if module is not None:
                return common.OperationConverterResult(module, only_first(node))
            if original is None:
                raise NotImplementedError(f"{op} (opset {version}) with a computed input")
            return original(node, graph)

        table[key("", op, version)] = convert

    def reshape(node: Any, graph: Any) -> nn.Module | None:
        shape = constant(node, graph, 1)
        allowzero = bool(node.attributes.get("allowzero", 0))
        return None if shape is None else StaticReshape(shape, allowzero)

    def squeeze(node: Any, graph: Any) -> nn.Module | None:
        axes = constant(node, graph, 1)
        return None if axes is None else StaticSqueeze(axes)

    def reducer(node: Any, graph: Any) -> nn.Module | None:
        axes = constant(node, graph, 1)
        if axes is None and len(node.input_values) > 1 and node.input_values[1]:
            return None  # axes computed by the graph: no static form
        if not axes and node.attributes.get("noop_with_empty_axes", 0):
            return nn.Identity()
        keepdims = node.attributes.get("keepdims", 1)
        module: nn.Module = reduce.OnnxReduceStaticAxes(node.operation_type, axes or None, keepdims)
        return module

    for version in (5, 13, 14, 19, 21):
        wrap("Reshape", version, reshape)
    for version in (13, 21):
        wrap("Squeeze", version, squeeze)
    for op in REDUCE_OPS:
        wrap(op, 18, reducer)


def unsupported(path: str) -> list[str]:
    """The operators of ``path`` onnx2torch cannot convert, as ``domain:Type (opset N)``."""
    import onnx

    onnx2torch = _import_onnx2torch()
    _static_converters(onnx2torch)
    registry = importlib.import_module("onnx2torch.node_converters.registry")
    model = onnx.load(path, load_external_data=False)
    opsets = {o.domain or "": o.version for o in model.opset_import}
    vision = importlib.util.find_spec("torchvision") is not None
    missing: set[str] = set()
    for node in model.graph.node:
        domain = node.domain or ""
        name = f"{domain + ':' if domain else ''}{node.op_type} (opset {opsets.get(domain, 0)})"
        if node.op_type in NEEDS_TORCHVISION and not vision:
            missing.add(f"{name}, needs torchvision")
            continue
        try:
            registry.get_converter(node.op_type, opsets.get(domain, 0), domain)
        except NotImplementedError:
            missing.add(name)
    return sorted(missing)


def _convert(path: str, out: str, shape: list[int]) -> dict[str, Any]:
    import importlib.metadata as md

    import torch

    onnx2torch = _import_onnx2torch()
    _static_converters(onnx2torch)
    module = onnx2torch.convert(path).eval()
    example = torch.zeros(shape, dtype=torch.float32)
    with torch.no_grad():
        program = torch.export.export(module, (example,))
    torch.export.save(program, out)
    return {
        "output": out,
        "input_shape": shape,
        "tools": {"onnx2torch": md.version("onnx2torch"), "torch": torch.__version__},
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--onnx", required=True)
    parser.add_argument("--out")
    parser.add_argument("--shape", help="the batch-1 input shape, comma-separated")
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    try:
        with contextlib.redirect_stdout(sys.stderr):
            if args.check:
                result: Any = {"unsupported": unsupported(args.onnx)}
            else:
                shape = [int(d) for d in args.shape.split(",")]
                result = _convert(args.onnx, args.out, shape)
    except Exception as exc:
        text = str(exc).strip().splitlines()
        print(f"{type(exc).__name__}: {text[0] if text else ''}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
