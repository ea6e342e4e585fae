"""Static INT8's graph-shaping options on a tiny MobileNet-like block (1x1, depthwise, 1x1).

The weights are fixed draws of a seeded generator: they are the model under test, not a figure.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeloop.core.errors import ConfigError
from edgeloop.data.dataset import Dataset, Modality, Splits
from edgeloop.optimize import ModelSource, create
from edgeloop.optimize.graph import census
from edgeloop.optimize.quantize import QDQ_OPTIONS


def _conv(
    name: str, x: str, w: np.ndarray, group: int = 1
) -> tuple[onnx.NodeProto, onnx.TensorProto]:
    pad = w.shape[-1] // 2
    node = helper.make_node(
        "Conv", [x, f"{name}.w"], [name], name=name, group=group, pads=[pad] * 4
    )
    return node, numpy_helper.from_array(w.astype(np.float32), f"{name}.w")


@pytest.fixture(scope="module")
def block(tmp_path_factory: pytest.TempPathFactory) -> ModelSource:
    rng = np.random.default_rng(0)
    parts = [
        _conv("expand", "input", rng.normal(0, 0.5, (8, 4, 1, 1))),
        _conv("depthwise", "expand_relu", rng.normal(0, 0.5, (8, 1, 3, 3)), group=8),
        _conv("project", "depthwise", rng.normal(0, 0.5, (4, 8, 1, 1))),
    ]
    nodes = [parts[0][0], helper.make_node("Relu", ["expand"], ["expand_relu"], name="relu")]
    nodes += [parts[1][0], parts[2][0]]
    nodes.append(helper.make_node("GlobalAveragePool", ["project"], ["pooled"], name="pool"))
    nodes.append(helper.make_node("Flatten", ["pooled"], ["output"], name="flat"))
    graph = helper.make_graph(
        nodes,
        "block",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 4, 8, 8])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["n", 4])],
        initializer=[p[1] for p in parts],
    )
    path = tmp_path_factory.mktemp("block") / "block.onnx"
    onnx.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8),
        str(path),
    )
    return ModelSource(path)


@pytest.fixture(scope="module")
def splits() -> Splits:
    x = np.random.default_rng(1).normal(0, 1, (48, 4, 8, 8)).astype(np.float32)
    ds = Dataset("noise", x, np.zeros(48, np.int64), ("none",), Modality.IMAGE)
    return Splits(ds, ds, ds, seed=0)


def _quantize(block: ModelSource, splits: Splits, out: Path, **params: object) -> onnx.ModelProto:
    variant = create("static-int8", samples=32, **params).fit(splits).apply(block, out)
    return onnx.load(str(variant.path))


def test_float_depthwise_leaves_only_the_grouped_conv_in_float(
    block: ModelSource, splits: Splits, tmp_path: Path
) -> None:
    _quantize(block, splits, tmp_path / "mixed.onnx", float_depthwise=True)
    got = census(tmp_path / "mixed.onnx")
    assert got.float_compute_nodes == ("depthwise",)
    assert got.int_compute == 2  # expand and project


def test_keep_removable_activations_keeps_the_relu(
    block: ModelSource, splits: Splits, tmp_path: Path
) -> None:
    folded = _quantize(block, splits, tmp_path / "a.onnx")
    kept = _quantize(
        block, splits, tmp_path / "b.onnx", qdq_options={"QDQKeepRemovableActivations": True}
    )
    assert "Relu" not in {n.op_type for n in folded.graph.node}
    assert "Relu" in {n.op_type for n in kept.graph.node}


def _weight_zero_points(model: onnx.ModelProto) -> np.ndarray:
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return np.concatenate(
        [
            inits[n.input[2]].ravel()
            for n in model.graph.node
            if n.op_type == "DequantizeLinear"
            and n.input[0] in inits
            and inits[n.input[0]].dtype == np.int8
        ]
    )


def test_asymmetric_weights_only_per_tensor(
    block: ModelSource, splits: Splits, tmp_path: Path
) -> None:
    asym = {"qdq_options": {"WeightSymmetric": False}}
    per_tensor = _quantize(block, splits, tmp_path / "t.onnx", per_channel=False, **asym)
    per_channel = _quantize(block, splits, tmp_path / "c.onnx", **asym)
    assert _weight_zero_points(per_tensor).any()
    # ORT quantizes per-channel weights symmetrically whatever WeightSymmetric says.
    assert not _weight_zero_points(per_channel).any()


def test_unknown_qdq_option_names_the_known_ones() -> None:
    with pytest.raises(ConfigError) as info:
        create("static-int8", qdq_options={"FoldEverything": True})
    assert "FoldEverything" in info.value.message
    assert all(key in info.value.message for key in QDQ_OPTIONS)


def test_qdq_option_values_must_be_booleans() -> None:
    with pytest.raises(ConfigError, match="WeightSymmetric"):
        create("static-int8", qdq_options={"WeightSymmetric": "no"})
