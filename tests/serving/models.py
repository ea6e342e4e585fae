"""Tiny real ONNX models for the server tests, built with onnx.helper (no torch).

Weights come from seeded generators: they are model content, not reported figures.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from tests.tiny_models import make_linear_onnx


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def make_cnn_onnx(path: Path, channels: int = 4, classes: int = 10, seed: int = 0) -> Path:
    """A small CNN on 3x32x32 images: conv-relu-pool, conv-relu, global pool, dense, softmax."""
    rng = np.random.default_rng(seed)

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)

    inits = [
        numpy_helper.from_array(weight(channels, 3, 3, 3), "c1"),
        numpy_helper.from_array(weight(channels, channels, 3, 3), "c2"),
        numpy_helper.from_array(weight(channels, classes), "fc"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "c1"], ["h1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["h1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "c2"], ["h2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["h2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("MatMul", ["f", "fc"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["output"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 32, 32])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", classes])],
        initializer=inits,
    )
    return _save(graph, path)


def make_slow_onnx(path: Path, width: int = 512, repeats: int = 24) -> Path:
    """A model that takes a while per call: ``repeats`` MatMuls reusing one width x width weight.

    A batch of 256 rows is ~3 GFLOP: tens of milliseconds or more on any CPU, small on disk.
    """
    rng = np.random.default_rng(1)
    w = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
    nodes, prev = [], "input"
    for i in range(repeats):
        nodes.append(helper.make_node("MatMul", [prev, "w"], [f"h{i}"]))
        prev = f"h{i}"
    nodes.append(helper.make_node("Identity", [prev], ["output"]))
    graph = helper.make_graph(
        nodes,
        "slow",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", width])],
        initializer=[numpy_helper.from_array(w, "w")],
    )
    return _save(graph, path)


def make_two_input_onnx(path: Path) -> Path:
    """``sum = a + b`` (float32, batch x 2) and ``count = n * 2`` (int64, batch x 1)."""
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["a", "b"], ["sum"]),
            helper.make_node("Add", ["n", "n"], ["count"]),
        ],
        "two",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", 2]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, ["batch", 2]),
            helper.make_tensor_value_info("n", TensorProto.INT64, ["batch", 1]),
        ],
        [
            helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["batch", 2]),
            helper.make_tensor_value_info("count", TensorProto.INT64, ["batch", 1]),
        ],
    )
    return _save(graph, path)


def make_repository(root: Path, name: str, versions: dict[int, int]) -> Path:
    """``root/name/VERSION/model.onnx``: one linear classifier per version, seeded per version."""
    for version, seed in versions.items():
        folder = root / name / str(version)
        folder.mkdir(parents=True, exist_ok=True)
        make_linear_onnx(folder / "model.onnx", seed=seed)
    return root / name


def add_version(model_dir: Path, version: int, seed: int) -> Path:
    """Write a new version atomically (temp file, then rename), as a deploy step would."""
    folder = model_dir / str(version)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = make_linear_onnx(folder / ".model.onnx.tmp", seed=seed)
    return tmp.replace(folder / "model.onnx")
