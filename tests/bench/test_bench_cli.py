"""`edgeloop bench` through Typer's CliRunner: the DESIGN's JSON shape, tables, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import typer
from onnx import TensorProto, helper, numpy_helper
from tests.tiny_models import make_linear_onnx
from typer.testing import CliRunner

from edgeloop.cli.bench import bench
from edgeloop.core.errors import ConfigError, NotFoundError

DESIGN_KEYS = {
    "model",
    "engine",
    "provider",
    "batch_size",
    "runs",
    "latency_ms",
    "throughput_per_s",
    "peak_rss_mb",
    "size_bytes",
    "accuracy",
    "power_w",
    "power_source",
    "cpu",
}


def make_app() -> typer.Typer:
    app = typer.Typer()
    app.command("bench")(bench)

    @app.callback()
    def root() -> None:
        """A group, so `bench` is a subcommand as in the real app."""

    return app


def invoke(*args: str) -> Any:
    return CliRunner().invoke(make_app(), ["bench", *args])


def as_json(result: Any) -> dict[str, Any]:
    assert result.exit_code == 0, (result.stderr, result.exception)
    body = json.loads(result.stdout)  # the whole of stdout is one JSON object
    assert isinstance(body, dict)
    return body


def test_json_is_the_design_shape(linear_onnx: Path) -> None:
    body = as_json(invoke(str(linear_onnx), "--runs", "25", "--warmup", "2", "--format", "json"))
    assert set(body) >= DESIGN_KEYS
    assert set(body["latency_ms"]) == {"p50", "p90", "p99"}
    assert body["model"] == str(linear_onnx)
    assert (body["batch_size"], body["runs"]) == (1, 25)
    assert body["size_bytes"] == linear_onnx.stat().st_size
    assert body["accuracy"] is None
    assert body["rss_scope"] == "subprocess"  # the CLI isolates by default
    assert body["peak_rss_mb"] > 0
    assert isinstance(body["power_source"], str) and body["power_source"]
    assert "batch1" not in body


def test_batch_size_adds_the_batch1_measurement(linear_onnx: Path) -> None:
    body = as_json(
        invoke(
            str(linear_onnx),
            "--batch-size",
            "8",
            "--runs",
            "20",
            "--warmup",
            "1",
            "--threads",
            "1",
            "--no-isolate",
            "--format",
            "json",
        )
    )
    assert (body["batch_size"], body["runs"], body["threads"]) == (8, 20, 1)
    batch1 = body["batch1"]
    assert (batch1["batch_size"], batch1["runs"], batch1["threads"]) == (1, 20, 1)
    assert set(batch1) >= DESIGN_KEYS
    assert body["rss_scope"] == batch1["rss_scope"] == "process"


def test_data_file_gives_accuracy_on_all_of_it(tmp_path: Path) -> None:
    model = make_linear_onnx(tmp_path / "m.onnx", features=4, classes=3)
    init = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(model)).graph.initializer}
    rng = np.random.default_rng(7)
    x = rng.integers(-4, 5, size=(90, 4)).astype(np.float32)
    logits = x.astype(np.float64) @ init["W"] + init["B"]
    y = np.argmax(logits, axis=1)
    y[::4] = (y[::4] + 1) % 3
    np.savez(tmp_path / "toy.npz", x=x, y=y, classes=np.array(["a", "b", "c"]))
    body = as_json(
        invoke(
            str(model),
            "--data",
            str(tmp_path / "toy.npz"),
            "--batch-size",
            "4",
            "--runs",
            "10",
            "--warmup",
            "1",
            "--split",
            "all",
            "--format",
            "json",
        )
    )
    assert body["accuracy"] == float(np.mean(np.argmax(logits, axis=1) == y))
    assert body["accuracy_split"] == "toy, 90 samples"
    assert body["batch1"]["accuracy"] is None  # measured once, in the main measurement
    assert "measured once, at batch 4" in body["batch1"]["accuracy_note"]
    assert body["inputs"].startswith("toy")


def test_data_defaults_to_the_held_out_test_split(tmp_path: Path) -> None:
    """Accuracy on training samples flatters a model: --data measures the test split."""
    from edgeloop.data import load_npz, stratified_split

    model = make_linear_onnx(tmp_path / "m.onnx", features=4, classes=3)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((120, 4)).astype(np.float32)
    y = rng.integers(0, 3, size=120)
    np.savez(tmp_path / "toy.npz", x=x, y=y)
    body = as_json(
        invoke(
            str(model),
            "--data",
            str(tmp_path / "toy.npz"),
            "--runs",
            "5",
            "--warmup",
            "1",
            "--format",
            "json",
        )
    )
    test = stratified_split(load_npz(tmp_path / "toy.npz"), val=0.15, test=0.15, seed=0).test
    assert body["accuracy_split"] == f"toy test split (seed 0), {len(test)} samples"
    init = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(model)).graph.initializer}
    expected = np.mean(np.argmax(test.x.astype(np.float64) @ init["W"] + init["B"], 1) == test.y)
    assert body["accuracy"] == float(expected)


def test_unknown_split_is_refused(tmp_path: Path) -> None:
    model = make_linear_onnx(tmp_path / "m.onnx")
    np.savez(tmp_path / "toy.npz", x=np.zeros((30, 4), np.float32), y=np.arange(30) % 3)
    result = invoke(str(model), "--data", str(tmp_path / "toy.npz"), "--split", "train")
    assert isinstance(result.exception, ConfigError)
    assert "'train'" in str(result.exception)


def test_table_for_people(linear_onnx: Path) -> None:
    result = invoke(str(linear_onnx), "--runs", "10", "--warmup", "1", "--no-isolate")
    assert result.exit_code == 0, result.stderr
    for text in ("latency p50 (ms)", "throughput", "peak RSS", "n/a", "CPUExecutionProvider"):
        assert text in result.stdout
    assert "benchmarking" in result.stderr


def test_missing_model_is_not_found(tmp_path: Path) -> None:
    result = invoke(str(tmp_path / "absent.onnx"), "--format", "json")
    assert isinstance(result.exception, NotFoundError)
    assert "absent.onnx" in str(result.exception)
    assert result.stdout == ""


def test_bad_runs_is_a_config_error(linear_onnx: Path) -> None:
    result = invoke(str(linear_onnx), "--runs", "0", "--no-isolate")
    assert isinstance(result.exception, ConfigError)
    assert "runs=0" in str(result.exception)


@pytest.mark.parametrize("fmt", ["yaml"])
def test_unknown_format_is_a_usage_error(linear_onnx: Path, fmt: str) -> None:
    result = invoke(str(linear_onnx), "--format", fmt)
    assert result.exit_code == 2
    assert fmt in result.stderr


def test_fixed_batch_axis_measures_only_that_batch(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["input"], ["out"])],
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [4, 3])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [4, 3])],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    onnx.save(proto, str(tmp_path / "four.onnx"))
    args = ("--runs", "5", "--warmup", "1", "--no-isolate", "--format", "json")
    result = invoke(str(tmp_path / "four.onnx"), "--batch-size", "4", *args)
    body = as_json(result)
    assert body["batch_size"] == 4
    assert "batch1" not in body
    assert "fixed batch axis of 4" in result.stderr
    wrong = invoke(str(tmp_path / "four.onnx"), *args)  # batch 1 does not fit
    assert isinstance(wrong.exception, ConfigError)
    assert "fixed batch axis of 4" in str(wrong.exception)
