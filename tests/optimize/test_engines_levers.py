"""Engine levers: ONNX Runtime's graph optimization level, OpenVINO properties, static shapes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgeloop.core.errors import ConfigError
from edgeloop.data.dataset import Dataset, Modality, Splits
from edgeloop.optimize import ModelSource, create
from edgeloop.optimize.engines import (
    OPENVINO,
    Engine,
    EngineSetup,
    GraphLevel,
    PrecisionHint,
    _ort_session,
    open_runner,
)

HAS_OPENVINO = importlib.util.find_spec("openvino") is not None


def _inputs(n: int = 24) -> np.ndarray:
    return (np.arange(n * 4, dtype=np.float32).reshape(n, 4) % 7) / 7 - 0.5


@pytest.fixture
def qdq_linear(linear_onnx: Path, tmp_path: Path) -> Path:
    x = _inputs()
    ds = Dataset("grid", x, np.zeros(len(x), np.int64), ("none",), Modality.TABULAR)
    splits = Splits(ds, ds, ds, seed=0)
    out = tmp_path / "linear-int8.onnx"
    return create("static-int8", samples=16).fit(splits).apply(ModelSource(linear_onnx), out).path


def test_graph_level_decides_whether_qdq_is_fused(qdq_linear: Path, tmp_path: Path) -> None:
    ran: dict[GraphLevel, set[str]] = {}
    for level in (GraphLevel.ALL, GraphLevel.DISABLED):
        saved = tmp_path / f"{level.value}.onnx"
        _ort_session(qdq_linear, EngineSetup(Engine.ONNXRUNTIME, graph_level=level), 1, saved)
        ran[level] = {n.op_type for n in onnx.load(str(saved)).graph.node}
    # Disabled: the float Gemm runs between DequantizeLinear and QuantizeLinear; all: QGemm.
    assert {"Gemm", "DequantizeLinear"} <= ran[GraphLevel.DISABLED]
    assert "QGemm" in ran[GraphLevel.ALL] and "Gemm" not in ran[GraphLevel.ALL]
    fused = open_runner(qdq_linear, EngineSetup(Engine.ONNXRUNTIME), 1)
    raw = open_runner(
        qdq_linear, EngineSetup(Engine.ONNXRUNTIME, graph_level=GraphLevel.DISABLED), 1
    )
    x = _inputs()[:3]
    np.testing.assert_allclose(fused.run(x), raw.run(x), atol=0.05)


def test_setup_labels_name_every_lever() -> None:
    ort = EngineSetup(
        Engine.ONNXRUNTIME, session_config={"a": "1"}, graph_level=GraphLevel.EXTENDED
    )
    assert ort.label == "onnxruntime (graph level extended, a=1)"
    ov = EngineSetup(
        Engine.OPENVINO, PrecisionHint.BF16, openvino_config={"X": "Y"}, static_shapes=True
    )
    assert ov.label == "openvino (bf16 precision, static shapes, X=Y)"
    assert OPENVINO.label == "openvino (default precision)"


@pytest.mark.parametrize(
    ("kwargs", "bad"),
    [
        ({"engine": Engine.ONNXRUNTIME, "openvino_config": {"A": "B"}}, "openvino only"),
        ({"engine": Engine.ONNXRUNTIME, "static_shapes": True}, "openvino only"),
        ({"engine": Engine.OPENVINO, "graph_level": GraphLevel.BASIC}, "onnxruntime only"),
        (
            {"engine": Engine.OPENVINO, "openvino_config": {"INFERENCE_PRECISION_HINT": "f32"}},
            "precision_hint",
        ),
    ],
)
def test_levers_belong_to_their_engine(kwargs: dict[str, object], bad: str) -> None:
    with pytest.raises(ConfigError) as info:
        EngineSetup(**kwargs)  # type: ignore[arg-type]
    assert bad in info.value.message + (info.value.hint or "")


@pytest.mark.skipif(not HAS_OPENVINO, reason="openvino not installed")
def test_openvino_static_shapes_and_properties_give_the_same_outputs(linear_onnx: Path) -> None:
    dynamic = open_runner(linear_onnx, OPENVINO, 1)
    static = open_runner(
        linear_onnx,
        EngineSetup(
            Engine.OPENVINO,
            PrecisionHint.F32,
            openvino_config={"PERFORMANCE_HINT": "THROUGHPUT", "ENABLE_CPU_PINNING": "YES"},
            static_shapes=True,
        ),
        1,
    )
    for batch in (1, 5, 1):  # one compiled model per shape, reused
        x = _inputs()[:batch]
        np.testing.assert_allclose(static.run(x), dynamic.run(x), rtol=0.02, atol=0.02)
