"""Measuring a model on each engine: timing method, set-ups, precision reports, the winner."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgeloop.core.errors import ConfigError, NotFoundError
from edgeloop.core.types import Latency
from edgeloop.optimize.engines import (
    OPENVINO,
    OPENVINO_F32,
    ORT,
    Engine,
    EngineComparison,
    EngineRun,
    EngineSetup,
    PrecisionHint,
    available_setups,
    batches,
    measure_engines,
    openvino_reason,
    time_runs,
)

HAS_OPENVINO = importlib.util.find_spec("openvino") is not None


def _inputs(n: int = 6) -> np.ndarray:
    return np.arange(n * 4, dtype=np.float32).reshape(n, 4) / 10


def test_batches_cycle_the_samples_in_order() -> None:
    got = batches(_inputs(5), 2, 4)
    rows = [b[:, 0] * 10 / 4 for b in got]
    assert [r.tolist() for r in rows] == [[0, 1], [2, 3], [4, 0], [1, 2]]


def test_time_runs_counts_every_run() -> None:
    calls: list[int] = []
    latency, throughput = time_runs(lambda x: calls.append(len(x)), _inputs(), 3, runs=7, warmup=2)
    assert calls == [3] * 9  # 2 warm-up + 7 timed, each a batch of 3
    assert latency.p50 <= latency.p90 <= latency.p99
    assert throughput > 0


def test_time_runs_rejects_bad_counts() -> None:
    with pytest.raises(ConfigError, match="runs=0"):
        time_runs(lambda x: x, _inputs(), 1, runs=0, warmup=0)


def test_onnxruntime_run_reports_compute_precision(linear_onnx: Path) -> None:
    result = measure_engines(linear_onnx, _inputs(), setups=[ORT], batch_sizes=(1, 4), runs=5)
    assert [r.batch_size for r in result.runs] == [1, 4]
    first = result.runs[0]
    assert first.setup.engine is Engine.ONNXRUNTIME and first.runs == 5 and first.threads == 1
    assert dict(first.layer_precisions) == {"int": 0, "float": 1}  # the one MatMul, in float
    assert result.winner(4).batch_size == 4
    assert result.to_dict()["winner"] == {"1": "onnxruntime", "4": "onnxruntime"}


def test_session_config_entries_reach_onnxruntime(linear_onnx: Path) -> None:
    setup = EngineSetup(Engine.ONNXRUNTIME, session_config={"session.x64quantprecision": "1"})
    result = measure_engines(linear_onnx, _inputs(), setups=[setup], runs=3)
    assert result.runs[0].setup.label == "onnxruntime (session.x64quantprecision=1)"


@pytest.mark.skipif(not HAS_OPENVINO, reason="openvino not installed")
def test_openvino_reports_the_precision_it_ran(linear_onnx: Path) -> None:
    result = measure_engines(linear_onnx, _inputs(), setups=[OPENVINO, OPENVINO_F32], runs=3)
    default, f32 = result.runs
    assert f32.precision == "f32"
    assert all(key.endswith(":f32") for key in f32.layer_precisions)
    assert default.precision in ("f32", "bf16", "f16")
    assert sum(default.layer_precisions.values()) == 1  # one compute layer either way


def test_a_setup_that_cannot_load_is_skipped_with_the_reason(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Mystery", ["input"], ["output"], domain="com.example")],
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["n", 4])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)]
    )
    path = tmp_path / "mystery.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ConfigError) as info:
        measure_engines(path, _inputs(), setups=[ORT], runs=2)
    assert "mystery.onnx" in info.value.message and "onnxruntime" in info.value.message


def test_openvino_reason_keeps_the_summary_lines() -> None:
    text = (
        "Exception from src/inference/src/cpp/core.cpp:132:\n"
        "Check 'false' failed at src/frontends/x.cpp:151:\n"
        "Summary:\n"
        "-- No conversion rule found for operations: com.microsoft.QGemm\n"
        "-- Conversion is failed for: QLinearConv-18\n"
    )
    assert openvino_reason(text) == (
        "No conversion rule found for operations: com.microsoft.QGemm; "
        "Conversion is failed for: QLinearConv-18"
    )
    assert openvino_reason("Exception from a.cpp:1:\nshape mismatch\n") == "shape mismatch"


def test_missing_model_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="nope.onnx"):
        measure_engines(tmp_path / "nope.onnx", _inputs(), setups=[ORT])


def test_setup_options_belong_to_their_engine() -> None:
    with pytest.raises(ConfigError, match="openvino only"):
        EngineSetup(Engine.ONNXRUNTIME, PrecisionHint.F32)
    with pytest.raises(ConfigError, match="onnxruntime only"):
        EngineSetup(Engine.OPENVINO, session_config={"a": "b"})


def test_available_setups_match_what_is_installed() -> None:
    setups, missing = available_setups()
    assert setups[0] == ORT
    assert (OPENVINO in setups) is HAS_OPENVINO
    assert bool(missing) is not HAS_OPENVINO


def _run(setup: EngineSetup, batch: int, p50: float) -> EngineRun:
    return EngineRun(
        model=Path("m.onnx"),
        setup=setup,
        batch_size=batch,
        threads=1,
        runs=3,
        latency_ms=Latency(p50, p50, p50),
        throughput_per_s=batch / p50 * 1000,
        precision="f32",
        layer_precisions={},
        engine_version="x",
    )


def test_the_winner_is_the_lowest_median_per_batch_size() -> None:
    result = EngineComparison(
        (_run(ORT, 1, 2.0), _run(OPENVINO, 1, 1.5), _run(ORT, 8, 9.0), _run(OPENVINO, 8, 11.0))
    )
    assert result.winner(1).setup == OPENVINO and result.winner(8).setup == ORT
    with pytest.raises(NotFoundError, match="32"):
        result.winner(32)
