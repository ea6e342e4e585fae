"""Tiny real ONNX models for the runtime tests, built without torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

WIDTH = 64


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def make_wide_onnx(path: Path, weights_mb: float, seed: int = 0) -> Path:
    """``input (batch, 64) @ W``, W random float32 of ``weights_mb`` MiB: its RSS is visible."""
    columns = max(1, int(weights_mb * 1024 * 1024 / 4 / WIDTH))
    w = np.random.default_rng(seed).standard_normal((WIDTH, columns)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "W"], ["output"])],
        "wide",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", WIDTH])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", columns])],
        initializer=[numpy_helper.from_array(w, "W")],
    )
    return _save(graph, path)


def make_lookup_onnx(path: Path, rows: int = 10, classes: int = 3, seed: int = 0) -> Path:
    """Scores ``sum(table[ids])`` for int64 ``ids (batch, 2)``; an id >= ``rows`` makes the
    run fail inside onnxruntime (Gather out of bounds) though shape and dtype are right."""
    table = np.random.default_rng(seed).standard_normal((rows, classes)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["table", "ids"], ["picked"], axis=0),
            helper.make_node("ReduceSum", ["picked", "axes"], ["output"], keepdims=0),
        ],
        "lookup",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 2])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", classes])],
        initializer=[
            numpy_helper.from_array(table, "table"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axes"),
        ],
    )
    return _save(graph, path)


def make_fixed_onnx(path: Path) -> Path:
    """Two inputs with fixed shapes (no free axis): ``a (1, 3) + b (1, 3)`` and ``a * b``."""
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["a", "b"], ["sum"]),
            helper.make_node("Mul", ["a", "b"], ["prod"]),
        ],
        "fixed",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 3]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 3]),
        ],
        [
            helper.make_tensor_value_info("sum", TensorProto.FLOAT, [1, 3]),
            helper.make_tensor_value_info("prod", TensorProto.FLOAT, [1, 3]),
        ],
    )
    return _save(graph, path)


def make_custom_op_onnx(path: Path) -> Path:
    """A valid graph whose only node is an op no execution provider implements."""
    graph = helper.make_graph(
        [helper.make_node("Mystery", ["input"], ["output"], domain="com.example")],
        "custom",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 4])],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)],
    )
    model.ir_version = 8
    onnx.save(model, str(path))
    return path
