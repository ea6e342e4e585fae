"""``EdgeMLManager`` against a real local fleet: a control plane and two agents as processes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from tests.sdk.digits_model import digits_onnx
from tests.tiny_models import make_linear_onnx

from edgeloop.bench.measure import benchmark
from edgeloop.core.errors import ConfigError, NotFoundError
from edgeloop.core.types import Manifest, TensorSpec
from edgeloop.sdk.local_fleet import LocalFleet
from edgeloop.sdk.manager import EdgeMLManager
from edgeloop.sdk.models import EdgeModel
from edgeloop.sdk.site import Site, save_site

pytestmark = pytest.mark.slow

FEATURES, CLASSES = 4, 3


@pytest.fixture(scope="module")
def published(fleet: LocalFleet, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """``lin:1`` on the fleet, its manifest holding a real benchmark of the file."""
    path = make_linear_onnx(tmp_path_factory.mktemp("m") / "lin.onnx", FEATURES, CLASSES, seed=1)
    measured = benchmark(path, runs=20, warmup=2)
    manifest = Manifest(
        name="lin",
        format="onnx",
        inputs=(TensorSpec("input", (None, FEATURES), "float32"),),
        outputs=(TensorSpec("output", (None, CLASSES), "float32"),),
        measurements=(measured,),
    )
    with EdgeMLManager.from_fleet(fleet.folder) as edge:
        record = edge.control.publish_model(path, manifest)
    return {"record": record, "path": path, "measured": measured}


@pytest.fixture
def edge(fleet: LocalFleet) -> Iterator[EdgeMLManager]:
    with EdgeMLManager.from_fleet(fleet.folder) as manager:
        yield manager


def test_a_site_profile_reaches_the_fleet(fleet: LocalFleet, home: Path) -> None:
    save_site(Site("factory-edge-01", fleet.control_url, fleet.admin_token))
    with EdgeMLManager("factory-edge-01") as edge:
        assert edge.get_edge_status()["nodes"]["total_nodes"] == 2


def test_model_list_shows_the_registered_model(
    edge: EdgeMLManager, published: dict[str, object]
) -> None:
    (lin,) = [m for m in edge.get_model_list() if m.name == "lin"]
    record = published["record"]
    assert isinstance(record, dict)
    assert (lin["version"], lin.sha256, lin.size_bytes) == (
        1, record["artifact_sha256"], Path(str(published["path"])).stat().st_size
    )  # fmt: skip
    # The figures are the manifest's benchmark of the file (run without data: no accuracy).
    measured = published["measured"]
    assert lin.latency_ms == measured.latency_ms.p50  # type: ignore[attr-defined]
    assert lin.accuracy is None and "without data" in str(lin.reason)


def test_edge_and_node_status_are_what_the_control_plane_lists(edge: EdgeMLManager) -> None:
    rows = {r["name"]: r for r in edge.control.nodes()}
    status = edge.get_edge_status()
    assert status["nodes"]["total_nodes"] == len(rows) == 2
    assert status.nodes.online == 2  # both agents reported within the window
    classes = {r["device_class"] for r in rows.values()}
    assert status.nodes.by_device_class == {c: 2 for c in classes}
    nodes = edge.get_node_status()["nodes"]
    after = {r["name"]: r for r in edge.control.nodes()}
    assert set(nodes) == {"node-camera-1", "node-gateway-1"}
    for name, info in nodes.items():
        caps = rows[name]["capabilities"]
        assert info["device_class"] == rows[name]["device_class"]
        assert info.memory_total == pytest.approx(caps["memory_mb"] / 1024, abs=1e-3)
        assert info.cpu == caps["cpu_model"] and info.agent_url == rows[name]["agent_url"]
        # MemAvailable as the agent read it for its last report (GiB), never above the total
        # (the agent may report again between the two reads: either report's figure is right)
        free = [
            r[name]["reported"]["resources"]["memory_available_mb"] / 1024 for r in (rows, after)
        ]
        assert any(info.memory_available == pytest.approx(f, abs=1e-3) for f in free), free
        assert 0 < info.memory_available <= info.memory_total
        assert "memory_available" not in info.reasons
        assert info.cpu_load_1m is not None and info.cpu_load_1m >= 0


def test_deploy_to_one_node_then_infer_there(
    edge: EdgeMLManager, published: dict[str, object]
) -> None:
    declared = EdgeModel("lin", "lin", input_shape=(FEATURES,), output_shape=(1, CLASSES),
                         accuracy=0.9, latency_ms=1.0)  # fmt: skip
    deployed = edge.deploy_model("lin", "node-camera-1", soak_s=0.5, timeout_s=60)
    assert deployed["version"] == 1 and deployed.state == "COMPLETED" and deployed.stated == {}
    again = edge.deploy_model(declared, "node-camera-1", soak_s=0.5, timeout_s=60)  # now checked
    assert again.version == 1 and again.stated["accuracy"] == 0.9
    assert again.measured["latency_ms"] == published["measured"].latency_ms.p50  # type: ignore[attr-defined]
    nodes = edge.get_node_status().nodes
    assert (
        nodes["node-camera-1"].active_models == ["lin:1"]
        and nodes["node-gateway-1"].active_models == []
    )
    assert edge.get_edge_status().models_deployed == 1

    x = np.random.default_rng(0).standard_normal((5, FEATURES)).astype(np.float32)
    expected = ort.InferenceSession(str(published["path"])).run(None, {"input": x})[0]
    result = edge.run_inference("lin", x, "node-camera-1")
    np.testing.assert_allclose(np.asarray(result["output"]), expected, atol=1e-5)
    assert result.model_name == "lin" and result.model_version == "1"
    assert result.inference_time_ms > 0
    one = edge.run_inference("lin:1", {"features": x[0].tolist()}, "node-camera-1")
    np.testing.assert_allclose(np.asarray(one.output), expected[:1], atol=1e-5)
    with pytest.raises(NotFoundError, match="does not serve"):
        edge.run_inference("lin", x, "node-gateway-1")

    # The node's metrics snapshots (every second here) carry its served model's drift state.
    deadline = time.monotonic() + 20
    while "lin" not in ((drift := edge.get_node_status().nodes["node-camera-1"].drift) or {}):
        assert time.monotonic() < deadline, edge.get_node_status().nodes["node-camera-1"].reasons
        time.sleep(0.5)
    assert drift["lin"]["version"] == "1" and "state" in drift["lin"]


def test_a_declared_shape_that_does_not_fit_is_refused_before_any_rollout(
    edge: EdgeMLManager, published: dict[str, object]
) -> None:
    before = len(edge.control.rollouts())
    with pytest.raises(ConfigError, match=r"input_shape=\(5,\) does not fit"):
        edge.deploy_model(EdgeModel("lin:1", "lin", input_shape=(5,)), "node-gateway-1")
    assert len(edge.control.rollouts()) == before


def test_unknown_model_and_node_name_the_known_ones(
    edge: EdgeMLManager, published: dict[str, object]
) -> None:
    with pytest.raises(NotFoundError, match=r"registered: .*lin:1"):
        edge.deploy_model("nope", "node-camera-1")
    with pytest.raises(NotFoundError, match="nodes: node-camera-1, node-gateway-1"):
        edge.run_inference("lin", {"features": [0.0] * FEATURES}, "node-9")
    with pytest.raises(ConfigError, match="no torch checkpoint registered"):
        edge.prune_model("lin", sparsity=0.3)
    with pytest.raises(NotFoundError, match="does not hold lin:1"):  # the node's agent says so
        edge.benchmark_model("lin", "node-gateway-1", runs=5, timeout_s=60)


def test_quantize_registers_a_measured_int8_variant(edge: EdgeMLManager, tmp_path: Path) -> None:
    path = digits_onnx(tmp_path / "dig.onnx")
    manifest = Manifest(
        name="dig", format="onnx", dataset="digits",
        inputs=(TensorSpec("input", (None, 1, 8, 8), "float32"),),
        outputs=(TensorSpec("output", (None, 10), "float32"),),
    )  # fmt: skip
    edge.control.publish_model(path, manifest)
    result = edge.quantize_model("dig", "int8", runs=30)  # on the manifest's data set
    rows = {r["ref"]: r for r in edge.control.models()}
    assert result["parent"] == "dig:1" and result.ref in rows
    assert result.original_size_mb == pytest.approx(path.stat().st_size / 2**20)
    assert result.quantized_size_mb == pytest.approx(rows[result.ref]["size_bytes"] / 2**20)
    assert result.quantized_size_mb < result.original_size_mb
    assert result.speedup == pytest.approx(result.original_latency_ms / result.quantized_latency_ms)
    assert result.original_accuracy is not None and result.quantized_accuracy is not None


def test_prune_removes_channels_of_the_registered_checkpoint_and_registers_the_variant(
    edge: EdgeMLManager, tmp_path: Path
) -> None:
    pytest.importorskip("torch_pruning")
    from tests.optimize.torch_parents import digits_splits, trained_parent

    from edgeloop.formats.onnx_info import inspect_onnx

    parent = trained_parent(tmp_path, digits_splits(), width=8, epochs=2)
    info = inspect_onnx(parent.onnx)
    manifest = Manifest(name="cnn", format="onnx", dataset="digits",
                        inputs=info.inputs, outputs=info.outputs)  # fmt: skip
    edge.control.publish_model(parent.onnx, manifest)  # no checkpoint: refused, says what to add
    with pytest.raises(ConfigError, match="--checkpoint DIR"):
        edge.prune_model("cnn", sparsity=0.5)
    edge.control.publish_model(parent.onnx, manifest, checkpoint=parent.checkpoint)
    result = edge.prune_model("cnn:2", sparsity=0.5, epochs=1, runs=20)
    rows = {r["ref"]: r for r in edge.control.models()}
    assert result["parent"] == "cnn:2" and rows[result.ref]["manifest"]["parent"] == "cnn:2"
    # Torch-Pruning removed half of each hidden layer's channels: parameters and MACs shrink
    assert result["pruned_parameters"] < result["original_parameters"] * 0.5
    assert result.pruned_macs < result.original_macs
    assert result.original_size_mb == pytest.approx(parent.onnx.stat().st_size / 2**20)
    assert result.pruned_size_mb == pytest.approx(rows[result.ref]["size_bytes"] / 2**20)
    assert result.speedup == pytest.approx(result.original_latency_ms / result.pruned_latency_ms)
    assert result.pruned_accuracy is not None
    # the variant's own pruned checkpoint is registered too: it can be pruned again
    assert set(rows[result.ref]["manifest"]["recipe"]["checkpoint"]) == {"weights", "config"}
