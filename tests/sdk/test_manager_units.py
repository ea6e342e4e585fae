"""The SDK's values, site profiles and row parsing, without a fleet (fast)."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgeloop.core.errors import ConfigError, DataError, NotFoundError
from edgeloop.sdk.inputs import as_array
from edgeloop.sdk.manager import EdgeMLManager, OnDeviceTraining
from edgeloop.sdk.models import DeploymentTarget, EdgeModel, ModelType, shapes_match
from edgeloop.sdk.results import NodeCounts, model_info, node_info
from edgeloop.sdk.site import Site, get_site, load_sites, remove_site, save_site, sites_path


def test_import_edgeloop_imports_neither_torch_nor_onnxruntime_nor_fastapi() -> None:
    code = (
        "import sys, edgeloop; edgeloop.EdgeModel; "
        "print([m for m in ('torch', 'onnxruntime', 'fastapi') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_sdk_names_are_exported_lazily() -> None:
    import edgeloop

    assert edgeloop.EdgeMLManager is EdgeMLManager
    assert edgeloop.OnDeviceTraining is OnDeviceTraining
    assert {t.name for t in edgeloop.DeploymentTarget} == {"CPU", "GPU", "NPU", "TPU", "MCU"}
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = edgeloop.Nope


def test_results_answer_keys_and_a_wrong_key_lists_the_fields() -> None:
    counts = NodeCounts(total_nodes=3, online=2, by_device_class={"x86_64-cpu": 3})
    assert counts["total_nodes"] == 3 and counts.online == 2
    with pytest.raises(KeyError, match="total_nodes"):
        counts["nodes"]


def test_edge_model_checks_its_values() -> None:
    m = EdgeModel("lin:1", "lin", input_shape=(1, 4), output_shape=[-1, 3], accuracy=92.5)
    assert m.model_type is ModelType.CNN
    assert m.output_shape == (None, 3) and m.accuracy == pytest.approx(0.925)
    with pytest.raises(ConfigError, match="dimension 0"):
        EdgeModel("lin", "lin", input_shape=(0, 4))
    with pytest.raises(ConfigError, match="negative"):
        EdgeModel("lin", "lin", latency_ms=-1.0)
    with pytest.raises(ConfigError):
        EdgeModel("bad name!", "x")
    assert DeploymentTarget("npu") is DeploymentTarget.NPU


def test_declared_shapes_may_leave_out_the_batch_dimension() -> None:
    assert shapes_match((4,), (None, 4))
    assert shapes_match((1, 4), (None, 4))
    assert not shapes_match((5,), (None, 4))
    assert not shapes_match((1, 28, 28), (None, 4))


def test_site_profiles_are_stored_0600_and_an_unknown_one_lists_the_known(home: Path) -> None:
    save_site(Site("factory-edge-01", "http://127.0.0.1:8700", "secret-a"))
    save_site(Site("lab", "https://lab.example:8700", "secret-b"))
    path = sites_path()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert get_site("lab").token == "secret-b"
    with pytest.raises(NotFoundError, match="factory-edge-01, lab"):
        EdgeMLManager("nowhere")
    remove_site("lab")
    assert set(load_sites()) == {"factory-edge-01"}
    with pytest.raises(NotFoundError, match="'lab' is not known"):
        remove_site("lab")
    with pytest.raises(ConfigError, match="not an http"):
        Site("x", "ftp://a", "t")


def test_the_site_cli_adds_lists_and_removes(home: Path, tmp_path: Path) -> None:
    from edgeloop.cli.app import app

    token = tmp_path / "token"
    token.write_text("s3cret\n")
    run = CliRunner().invoke
    added = run(app, ["site", "add", "a", "--url", "http://h:1", "--token-file", str(token)])
    assert added.exit_code == 0, added.output
    listed = run(app, ["site", "list", "--format", "json"])
    assert json.loads(listed.stdout)["sites"] == [
        {"name": "a", "url": "http://h:1", "token": "(6 characters)"}
    ]
    assert "s3cret" not in listed.stdout and get_site("a").token == "s3cret"
    both = run(app, ["site", "add", "b", "--url", "http://h:1"])
    assert isinstance(both.exception, ConfigError)  # main() turns it into exit code 2
    assert run(app, ["site", "rm", "a"]).exit_code == 0
    assert isinstance(run(app, ["site", "rm", "a"]).exception, NotFoundError)


ROW = {"name": "lin", "version": 2, "ref": "lin:2", "sha256": "ab" * 32, "size_bytes": 275}


def test_model_figures_come_from_the_manifest_measurement_or_say_why_not() -> None:
    measured = {"latency_ms": {"p50": 0.25}, "accuracy": 0.9, "accuracy_split": "digits test",
                "cpu": "Xeon", "batch_size": 1}  # fmt: skip
    info = model_info({**ROW, "manifest": {"measurements": [measured]}})
    assert (info["latency_ms"], info["accuracy"], info.reason) == (0.25, 0.9, None)
    unmeasured = model_info({**ROW, "manifest": {"measurements": []}})
    assert unmeasured.latency_ms is None and "without a measurement" in str(unmeasured.reason)
    assert "no manifest" in str(model_info(ROW).reason)


def test_node_rows_become_node_info_with_reasons_for_what_the_node_does_not_report() -> None:
    row = {
        "node_id": "node-1a", "name": "cam", "device_class": "aarch64-npu",
        "capabilities": {"memory_mb": 4096, "cpu_model": "Cortex-A76", "cpu_count": 4},
        "agent_url": "http://127.0.0.1:1", "last_seen": "2026-01-01T00:00:00+00:00",
        "reported": {"active": {"name": "lin", "version": 2}},
    }  # fmt: skip
    seen = 1767225600.0  # 2026-01-01T00:00:00Z
    info = node_info(row, 60.0, seen + 30)
    assert (info.device_type, info.memory_total, info.cpu_count) == ("npu", 4.0, 4)
    assert info.online and info.active_models == ["lin:2"]
    assert info.memory_available is None and "no memory reading" in info.reasons["memory_available"]
    assert not node_info(row, 60.0, seen + 61).online
    row["reported"] = {"resources": {"memory_available_mb": 1536.0}}
    assert node_info(row, 60.0, seen).memory_available == 1.5
    row["reported"] = {"resources": {"memory_available_mb": None, "reason": "no MemAvailable"}}
    assert node_info(row, 60.0, seen).reasons["memory_available"] == "no MemAvailable"


def test_inputs_are_shaped_for_the_model_and_an_image_needs_a_preprocessing_record(
    tmp_path: Path,
) -> None:
    from PIL import Image

    spec = {"name": "input", "datatype": "FP32", "shape": [-1, 4]}
    assert as_array({"features": [1, 2, 3, 4]}, spec, None).shape == (1, 4)
    assert as_array(np.ones((3, 4)), spec, None).dtype == np.float32
    with pytest.raises(DataError, match=r"\[1, 5\]"):
        as_array({"features": [1, 2, 3, 4, 5]}, spec, None)
    frame = tmp_path / "frame.png"
    Image.fromarray(np.full((10, 12), 255, np.uint8)).save(frame)
    with pytest.raises(ConfigError, match="recipe.preprocessing"):
        as_array({"image": str(frame)}, spec, {"recipe": {}})
    image_spec = {"name": "x", "datatype": "FP32", "shape": [-1, 1, 8, 8]}
    recipe = {"recipe": {"preprocessing": {"size": [8, 8], "mode": "L", "layout": "NCHW"}}}
    x = as_array({"image": str(frame)}, image_spec, recipe)
    assert x.shape == (1, 1, 8, 8) and float(x.max()) == pytest.approx(1.0)


def test_calls_the_fleet_cannot_do_yet_say_what_is_missing() -> None:
    edge = EdgeMLManager(Site("s", "http://127.0.0.1:9", "t"))
    with pytest.raises(ConfigError, match="client_nodes is empty"):  # before any call
        edge.federated_learning_round("digits-mlp", [])
    with pytest.raises(ConfigError, match="must carry labels"):
        OnDeviceTraining(edge).incremental_train("lin", np.zeros((2, 4)), epochs=1)
    edge.close()


def test_fleet_node_names_are_one_per_node_unique_and_usable_as_folders() -> None:
    from edgeloop.sdk.local_fleet import node_names_for
    from edgeloop.sdk.site import check_site_name

    assert node_names_for(2, None) == ["node-1", "node-2"]
    assert node_names_for(2, ["node-camera-1", "node-gateway-1"]) == [
        "node-camera-1", "node-gateway-1"
    ]  # fmt: skip
    with pytest.raises(ConfigError, match="1 names"):
        node_names_for(2, ["a"])
    for bad in (["a", "a"], ["../x", "b"], ["control", "b"]):
        with pytest.raises(ConfigError, match="must be unique"):
            node_names_for(2, bad)
    with pytest.raises(ConfigError, match="site name"):
        check_site_name("no spaces")
