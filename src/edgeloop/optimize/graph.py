"""What an ONNX graph computes in which precision, and offline graph optimization.

:func:`census` counts a graph's operators and says which compute operators (Conv, MatMul, Gemm)
run on integers and which stayed in float: the figure that tells whether a quantized model can
be faster at all. :class:`GraphOptimizer` (``graph-opt``) rewrites a model with ONNX Runtime's
offline optimizer or onnxslim and keeps the result only when its outputs match the parent's.
:func:`gemm_to_matmul` is the rewrite dynamic quantization needs (it quantizes MatMul, not Gemm).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import onnx
from onnx import numpy_helper

from edgeloop.core.errors import ConfigError, ConversionError, require
from edgeloop.formats.parity import check_parity
from edgeloop.optimize.base import ModelSource, OptimizerBase, Variant, register

# Operators that hold nearly all of a network's multiply-accumulates.
FLOAT_COMPUTE = ("Conv", "ConvTranspose", "MatMul", "Gemm")
# Their float forms after ONNX Runtime's own fusions (in the graph it saves when optimizing).
FUSED_FLOAT_COMPUTE = ("FusedConv", "NhwcFusedConv", "NhwcConv", "FusedGemm", "FusedMatMul")
# Their integer forms: QOperator format, dynamic quantization, and ORT's runtime fusions.
INT_COMPUTE = (
    "QLinearConv",
    "QLinearMatMul",
    "QGemm",
    "ConvInteger",
    "MatMulInteger",
    "DynamicQuantizeMatMul",
    "MatMulIntegerToFloat",
)
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear")

E = TypeVar("E", bound=StrEnum)


@dataclass(frozen=True, slots=True)
class OpCensus:
    """Operator counts of one graph and how its compute operators run.

    ``int_compute`` counts integer compute nodes plus QDQ-wrapped float compute nodes (a Conv
    whose data and weight inputs come from DequantizeLinear, which ONNX Runtime fuses into
    QLinearConv); ``float_compute`` counts the compute nodes left in float. ``initializer_bytes``
    maps an element type (``float32``, ``int8``, ...) to the bytes of weights stored in it.
    """

    ops: Mapping[str, int]
    int_compute: int
    float_compute: int
    float_compute_nodes: tuple[str, ...]
    initializer_bytes: Mapping[str, int]

    def __post_init__(self) -> None:
        if self.int_compute < 0 or self.float_compute < 0:
            raise ConfigError(
                f"census counts must be >= 0: {self.int_compute}, {self.float_compute}"
            )

    @property
    def nodes(self) -> int:
        return sum(self.ops.values())

    def count(self, *op_types: str) -> int:
        return sum(self.ops.get(op, 0) for op in op_types)

    def to_dict(self) -> dict[str, Any]:
        return {
            "nodes": self.nodes,
            "ops": dict(sorted(self.ops.items())),
            "int_compute": self.int_compute,
            "float_compute": self.float_compute,
            "float_compute_nodes": list(self.float_compute_nodes),
            "initializer_bytes": dict(self.initializer_bytes),
        }


def census(model: onnx.ModelProto | str | Path) -> OpCensus:
    """Count ``model``'s operators (main graph) and its integer / float compute nodes (pure)."""
    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))
    graph = proto.graph
    producer = {out: node.op_type for node in graph.node for out in node.output}
    float_nodes: list[str] = []
    int_count = 0
    for node in graph.node:
        if node.op_type in INT_COMPUTE:
            int_count += 1
        elif node.op_type in FUSED_FLOAT_COMPUTE:
            float_nodes.append(node.name or f"{node.op_type}#{len(float_nodes)}")
        elif node.op_type in FLOAT_COMPUTE:
            # QDQ format keeps the float op; it runs on integers only when both its data
            # input and its weight arrive through DequantizeLinear (ORT fuses the pattern).
            fed = [producer.get(name) == "DequantizeLinear" for name in node.input[:2]]
            if len(fed) == 2 and all(fed):
                int_count += 1
            else:
                float_nodes.append(node.name or f"{node.op_type}#{len(float_nodes)}")
    return OpCensus(
        ops=dict(Counter(n.op_type for n in graph.node)),
        int_compute=int_count,
        float_compute=len(float_nodes),
        float_compute_nodes=tuple(float_nodes),
        initializer_bytes=_initializer_bytes(graph),
    )


def _initializer_bytes(graph: onnx.GraphProto) -> dict[str, int]:
    sizes: Counter[str] = Counter()
    for tensor in graph.initializer:
        name = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).name
        sizes[name] += int(np.prod(tensor.dims, dtype=np.int64)) * np.dtype(name).itemsize
    return dict(sorted(sizes.items()))


def strip_debug_info(model: onnx.ModelProto) -> int:
    """Drop per-node debug metadata (exporter stack traces, FX names, doc strings) in place.

    torch's exporter writes ~1 KB of them per node; ONNX Runtime's quantizer copies them onto
    the quantized nodes, where they can outweigh a small model's INT8 weights. Nothing reads
    them at run time. Model-level metadata is kept. Returns the bytes removed (pure).
    """
    before = int(model.ByteSize())
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    return before - int(model.ByteSize())


def gemm_to_matmul(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """Rewrite each plain ``Gemm`` (alpha = beta = 1, constant B, no transA) as MatMul + Add.

    ONNX Runtime's dynamic quantization has an integer kernel for MatMul but not for Gemm, and
    torch exports ``nn.Linear`` as Gemm: without this rewrite dynamic INT8 quantizes nothing in
    an MLP. Returns a new model and how many nodes were rewritten (pure).
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    inits = {t.name: t for t in graph.initializer}
    nodes: list[onnx.NodeProto] = []
    rewritten = 0
    for node in graph.node:
        replacement = _gemm_as_matmul(node, inits) if node.op_type == "Gemm" else None
        if replacement is None:
            nodes.append(node)
            continue
        new_nodes, new_weight = replacement
        graph.initializer.append(new_weight)
        nodes.extend(new_nodes)
        rewritten += 1
    del graph.node[:]
    graph.node.extend(nodes)
    return out, rewritten


def _gemm_as_matmul(
    node: onnx.NodeProto, inits: Mapping[str, onnx.TensorProto]
) -> tuple[list[onnx.NodeProto], onnx.TensorProto] | None:
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0 or attrs.get("transA", 0):
        return None
    if len(node.input) < 2 or node.input[1] not in inits:
        return None
    weight = numpy_helper.to_array(inits[node.input[1]])
    if attrs.get("transB", 0):
        weight = np.ascontiguousarray(weight.T)
    name = node.name or node.output[0]
    w_name = f"{node.input[1]}__matmul"
    product = f"{node.output[0]}__matmul" if len(node.input) > 2 else node.output[0]
    nodes = [onnx.helper.make_node("MatMul", [node.input[0], w_name], [product], name=name)]
    if len(node.input) > 2 and node.input[2]:
        nodes.append(
            onnx.helper.make_node(
                "Add", [product, node.input[2]], [node.output[0]], name=f"{name}__bias"
            )
        )
    return nodes, numpy_helper.from_array(weight, w_name)


class GraphTool(StrEnum):
    ONNXRUNTIME = "onnxruntime"
    ONNXSLIM = "onnxslim"


class GraphLevel(StrEnum):
    """ONNX Runtime's offline optimization levels that may be saved.

    ``basic`` keeps standard ONNX operators (constant folding, redundant-node removal), so any
    engine loads the result. ``extended`` adds fusions into ONNX Runtime contrib operators
    (``com.microsoft`` FusedConv, ...) that only ONNX Runtime runs. ``all`` (layout
    optimizations) is left out on purpose: it writes NCHWc operators for this CPU's vector
    width, and ONNX Runtime applies it online anyway (its default level).
    """

    BASIC = "basic"
    EXTENDED = "extended"


def parse_choice(enum: type[E], value: object, what: str) -> E:
    """``value`` as a member of ``enum``, or a ConfigError naming it and the allowed values."""
    for member in enum:
        if value == member.value:
            return member
    allowed = ", ".join(m.value for m in enum)
    raise ConfigError(
        f"{what} {value!r} is not known; expected one of {allowed}",
        hint=f"pass {what}=one of {allowed}",
    )


@register("graph-opt")
class GraphOptimizer(OptimizerBase):
    """Offline graph optimization (constant folding, BN/Conv fusion, dead-node removal).

    Kept only when verified: ``apply`` measures parity on held-out samples and raises
    :class:`~edgeloop.core.errors.ParityError` beyond ``tolerance`` or any top-1 change.
    """

    name = "graph-opt"

    def __init__(
        self, *, tool: str = "onnxruntime", level: str = "basic", tolerance: float = 1e-4
    ) -> None:
        self.tool = parse_choice(GraphTool, tool, "tool")
        self.level = parse_choice(GraphLevel, level, "level")
        if not (isinstance(tolerance, int | float) and 0.0 < tolerance < 1.0):
            raise ConfigError(f"tolerance {tolerance!r} is out of range; expected 0 < t < 1")
        self.tolerance = float(tolerance)

    def apply(self, source: ModelSource, out: Path) -> Variant:
        """Optimize ``source.onnx`` into ``out`` and verify it.

        Raises:
            ConfigError: not fitted.
            MissingDependencyError: tool ``onnxslim`` is not installed.
            ConversionError: the optimizer failed.
            ParityError: the optimized model's outputs differ (the file is removed).
        """
        self._check_fitted()
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
        try:
            tools = self._run_tool(source.onnx, tmp)
            parity = self.measure_parity(source.onnx, tmp)
            check_parity(parity, tolerance=self.tolerance)
            tmp.replace(out)
        finally:
            tmp.unlink(missing_ok=True)
        before, after = census(source.onnx), census(out)
        domains = sorted({n.domain for n in onnx.load(str(out)).graph.node if n.domain})
        notes = (
            (f"uses {', '.join(domains)} operators: only ONNX Runtime can run this file",)
            if domains
            else ()
        )
        return Variant(
            method=self.name,
            path=out,
            settings=self.get_params(),
            tools=tools,
            parity=parity,
            parent=source.onnx,
            checkpoint=source.checkpoint,
            notes=notes,
            extra={"nodes_before": before.nodes, "nodes_after": after.nodes},
        )

    def _check_fitted(self) -> None:
        if not hasattr(self, "parity_x_"):
            raise ConfigError(
                f"method {self.name!r} was not fitted: call fit(splits) before apply()",
                hint="parity is measured on the test split; on the command line pass --data",
            )

    def _run_tool(self, src: Path, dst: Path) -> dict[str, str]:
        if self.tool is GraphTool.ONNXSLIM:
            slim = require("onnxslim", "optimize", "graph optimization with onnxslim")
            try:
                onnx.save(slim.slim(str(src)), str(dst))
            except Exception as exc:  # onnxslim raises plain exceptions of many kinds
                raise ConversionError(f"onnxslim failed on {str(src)!r}: {exc}") from exc
            return {"onnxslim": str(slim.__version__), "onnx": onnx.__version__}
        return ort_offline_optimize(src, dst, self.level)


def ort_offline_optimize(src: Path, dst: Path, level: GraphLevel) -> dict[str, str]:
    """Let ONNX Runtime optimize ``src`` at ``level`` and save the graph it would run to ``dst``.

    Raises:
        ConversionError: ONNX Runtime cannot load ``src``.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = {
        GraphLevel.BASIC: ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        GraphLevel.EXTENDED: ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    }[level]
    options.optimized_model_filepath = str(dst)
    options.log_severity_level = 3
    try:
        ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT's error classes are not public API
        raise ConversionError(
            f"ONNX Runtime {ort.__version__} cannot optimize {str(src)!r}: {exc}",
            hint="check the model loads with `edgeloop bench MODEL`",
        ) from exc
    return {"onnxruntime": str(ort.__version__), "onnx": onnx.__version__}
