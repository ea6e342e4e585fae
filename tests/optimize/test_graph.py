"""Graph inspection (census), the Gemm -> MatMul rewrite, and graph-opt verified by parity."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeloop.core.errors import ConfigError
from edgeloop.data import load_bundled, stratified_split
from edgeloop.data.dataset import Splits
from edgeloop.formats.parity import onnx_predictor
from edgeloop.optimize import ModelSource, create
from edgeloop.optimize.graph import census, gemm_to_matmul, strip_debug_info

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def splits() -> Splits:
    ds = load_bundled("digits")
    return stratified_split(ds.subset(np.arange(300)), val=0.15, test=0.15, seed=0)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Conv + BatchNorm + ReLU + Linear layers (random weights), exported by edgeloop."""
    from edgeloop.formats.onnx_export import export_onnx

    torch.manual_seed(0)
    module = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(8 * 64, 32),
        torch.nn.ReLU(),
        torch.nn.Linear(32, 10),
    ).eval()
    path = tmp_path_factory.mktemp("graph") / "net.onnx"
    export_onnx(module, np.zeros((2, 1, 8, 8), np.float32), path)
    return path


def test_census_counts_ops_and_float_compute(net: Path) -> None:
    got = census(net)
    assert got.count("Conv") == 1 and got.count("Gemm", "MatMul") == 2
    assert got.float_compute == 3 and got.int_compute == 0
    assert got.nodes == sum(got.ops.values())
    assert got.initializer_bytes["float32"] >= 4 * (8 * 9 + 8 * 64 * 32 + 32 * 10)


def test_census_counts_qdq_wrapped_conv_as_integer() -> None:
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    zero = numpy_helper.from_array(np.array(0, np.int8), "z")
    w = numpy_helper.from_array(np.ones((2, 1, 1, 1), np.int8), "wq")
    nodes = [
        helper.make_node("QuantizeLinear", ["input", "s", "z"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["x"]),
        helper.make_node("DequantizeLinear", ["wq", "s", "z"], ["w"]),
        helper.make_node("Conv", ["x", "w"], ["c"], name="qconv"),
        helper.make_node("Conv", ["c", "w"], ["output"], name="floatconv"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 2, 2])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 2, 2, 2])],
        initializer=[scale, zero, w],
    )
    got = census(helper.make_model(graph))
    assert got.int_compute == 1 and got.float_compute_nodes == ("floatconv",)
    assert got.initializer_bytes == {"float32": 4, "int8": 3}


def test_census_counts_ort_fused_float_ops(tmp_path: Path) -> None:
    """ORT fuses a 1-D Conv + Relu into FusedConv in the graph it runs: still float compute."""
    import onnxruntime as ort

    from edgeloop.optimize.engines import ORT, open_runner

    w = numpy_helper.from_array(np.ones((2, 1, 1), np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["input", "w"], ["c"]),
            helper.make_node("Relu", ["c"], ["output"]),
        ],
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 1, 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["n", 2, 4])],
        initializer=[w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "convrelu.onnx"
    onnx.save(model, str(path))
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "ran.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    assert census(tmp_path / "ran.onnx").ops == {"FusedConv": 1}
    assert dict(open_runner(path, ORT, 1).layer_precisions) == {"int": 0, "float": 1}


def test_gemm_to_matmul_keeps_outputs(net: Path, tmp_path: Path) -> None:
    model, rewritten = gemm_to_matmul(onnx.load(str(net)))
    assert rewritten == 2
    out = tmp_path / "mm.onnx"
    onnx.save(model, str(out))
    got = census(out)
    assert got.count("Gemm") == 0 and got.count("MatMul") == 2
    x = np.random.default_rng(1).standard_normal((5, 1, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(onnx_predictor(out)(x), onnx_predictor(net)(x), atol=1e-5)


def test_strip_debug_info_drops_node_metadata_only(net: Path, tmp_path: Path) -> None:
    model = onnx.load(str(net))
    assert any(n.metadata_props for n in model.graph.node)
    removed = strip_debug_info(model)
    assert removed > 0 and not any(n.metadata_props for n in model.graph.node)
    assert strip_debug_info(model) == 0
    out = tmp_path / "stripped.onnx"
    onnx.save(model, str(out))
    x = np.random.default_rng(2).standard_normal((3, 1, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(onnx_predictor(out)(x), onnx_predictor(net)(x))


def test_gemm_with_alpha_is_left_alone() -> None:
    b = numpy_helper.from_array(np.ones((3, 2), np.float32), "B")
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["input", "B"], ["output"], alpha=2.0)],
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 2])],
        initializer=[b],
    )
    model, rewritten = gemm_to_matmul(helper.make_model(graph))
    assert rewritten == 0 and [n.op_type for n in model.graph.node] == ["Gemm"]


@pytest.fixture(scope="module")
def foldable(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Conv -> BatchNormalization -> Identity -> Relu -> pool -> MatMul: work for an optimizer.

    torch's exporter already folds BatchNorm, so this graph is written by hand.
    """
    rng = np.random.default_rng(0)

    def init(name: str, *shape: int, positive: bool = False) -> onnx.TensorProto:
        a = rng.standard_normal(shape).astype(np.float32)
        return numpy_helper.from_array(np.abs(a) + 0.5 if positive else a, name)

    nodes = [
        helper.make_node("Conv", ["input", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["bn"]),
        helper.make_node("Identity", ["bn"], ["i"]),
        helper.make_node("Relu", ["i"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("MatMul", ["f", "wf"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes,
        "foldable",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 1, 8, 8])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["n", 10])],
        initializer=[
            init("w", 8, 1, 3, 3),
            init("g", 8, positive=True),
            init("b", 8),
            init("m", 8),
            init("v", 8, positive=True),
            init("wf", 8, 10),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path_factory.mktemp("foldable") / "foldable.onnx"
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("level", ["basic", "extended"])
def test_ort_graph_opt_is_verified_by_parity(
    level: str, foldable: Path, splits: Splits, tmp_path: Path
) -> None:
    variant = (
        create("graph-opt", level=level)
        .fit(splits)
        .apply(ModelSource(foldable), tmp_path / "o.onnx")
    )
    assert variant.parity.max_abs_diff <= 1e-4 and variant.parity.top1_agreement == 1.0
    assert variant.extra["nodes_before"] == 7
    assert variant.extra["nodes_after"] <= 5  # BatchNorm folded into Conv, Identity gone
    assert census(variant.path).count("BatchNormalization", "Identity") == 0
    assert variant.tools["onnxruntime"]
    if level == "extended":
        assert any("only ONNX Runtime" in note for note in variant.notes)


@pytest.mark.skipif(importlib.util.find_spec("onnxslim") is None, reason="onnxslim not installed")
def test_onnxslim_graph_opt_is_verified_by_parity(
    foldable: Path, splits: Splits, tmp_path: Path
) -> None:
    variant = (
        create("graph-opt", tool="onnxslim")
        .fit(splits)
        .apply(ModelSource(foldable), tmp_path / "s.onnx")
    )
    assert variant.parity.max_abs_diff <= 1e-4
    assert "onnxslim" in variant.tools
    assert variant.extra["nodes_after"] < variant.extra["nodes_before"]


def test_graph_opt_rejects_a_bad_tolerance() -> None:
    with pytest.raises(ConfigError, match="-1"):
        create("graph-opt", tolerance=-1)
