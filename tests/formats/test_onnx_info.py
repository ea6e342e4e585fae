"""Safe loading of untrusted ONNX files: each test is named after what it stops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from tests.tiny_models import make_linear_onnx

from edgeloop.core.errors import NotFoundError, UntrustedArtifactError
from edgeloop.formats import inspect_onnx


def test_reads_declared_tensors(linear_onnx: Path) -> None:
    info = inspect_onnx(linear_onnx)
    assert [t.to_dict() for t in info.inputs] == [
        {"name": "input", "shape": [None, 4], "dtype": "float32"}
    ]
    assert info.outputs[0].shape == (None, 3)
    assert info.opset == 17
    assert info.size_bytes == linear_onnx.stat().st_size
    assert info.external_bytes == 0


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="nope.onnx"):
        inspect_onnx(tmp_path / "nope.onnx")


def test_garbage_file_is_not_a_model(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\xff\xfe not a protobuf at all" * 10)
    with pytest.raises(UntrustedArtifactError, match="bad.onnx"):
        inspect_onnx(bad)


def test_oversized_file_is_refused(linear_onnx: Path) -> None:
    with pytest.raises(UntrustedArtifactError, match="above the limit of 10 bytes"):
        inspect_onnx(linear_onnx, max_bytes=10)


def _external_model(tmp_path: Path, location: str) -> Path:
    weights = numpy_helper.from_array(np.ones((4, 3), np.float32), "W")
    weights.ClearField("raw_data")
    weights.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "48")):
        entry = weights.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "W"], ["output"])],
        "ext",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["b", 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["b", 3])],
        initializer=[weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "models" / "ext.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


def test_external_data_beside_the_model_is_accepted(tmp_path: Path) -> None:
    path = _external_model(tmp_path, "ext.data")
    (path.parent / "ext.data").write_bytes(np.ones((4, 3), np.float32).tobytes())
    assert inspect_onnx(path).external_bytes == 48


@pytest.mark.parametrize("location", ["../secret.bin", "/etc/passwd", "sub/../../secret.bin"])
def test_external_data_path_traversal_is_refused(tmp_path: Path, location: str) -> None:
    (tmp_path / "secret.bin").write_bytes(b"\0" * 48)
    path = _external_model(tmp_path, location)
    with pytest.raises(UntrustedArtifactError, match="outside the model's folder"):
        inspect_onnx(path)


def test_external_data_symlink_out_of_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "secret.bin").write_bytes(b"\0" * 48)
    path = _external_model(tmp_path, "link.data")
    (path.parent / "link.data").symlink_to(tmp_path / "secret.bin")
    with pytest.raises(UntrustedArtifactError, match="outside"):
        inspect_onnx(path)


def test_missing_external_data_is_named(tmp_path: Path) -> None:
    path = _external_model(tmp_path, "gone.data")
    with pytest.raises(UntrustedArtifactError, match="gone.data"):
        inspect_onnx(path)


def test_input_that_cannot_be_served_is_refused(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["input"], ["output"])],
        "strings",
        [helper.make_tensor_value_info("input", TensorProto.STRING, ["b"])],
        [helper.make_tensor_value_info("output", TensorProto.STRING, ["b"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "s.onnx"
    onnx.save(model, str(path))
    with pytest.raises(UntrustedArtifactError, match="element type STRING"):
        inspect_onnx(path)


def test_invalid_graph_is_refused(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("NoSuchOp", ["input"], ["output"])],
        "bad",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["b", 2])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["b", 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "bad-graph.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(UntrustedArtifactError, match="not a valid ONNX graph"):
        inspect_onnx(path)


def test_fixture_builder_is_deterministic(tmp_path: Path) -> None:
    a = make_linear_onnx(tmp_path / "a.onnx").read_bytes()
    b = make_linear_onnx(tmp_path / "b.onnx").read_bytes()
    assert a == b
