"""On-device training of an INT8 edge variant (issue 13 parts 5 and 6), across real processes.

The fleet serves what the optimize stage published: ``blobs-edge:1``, a static-INT8 child of
the FP32 ``blobs:1`` that holds the torch checkpoint. A training job for the variant makes the
control plane send the parent's checkpoint and the variant's recipe; the node fine-tunes the
parent's weights, quantizes the export again (calibrated on its own training-side samples)
and decides on the quantized file scored with ONNX Runtime against the served variant; the
node-local version keeps the variant's name and serves an INT8 model. A variant whose recipe
has a torch-side step is refused at once, naming the recipe.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from tests.agent.agent_process import AgentProcess
from tests.agent.test_node_training import DONE, _blobs, _model
from tests.control.process import control_process

from edgeloop.core.errors import ConfigError
from edgeloop.core.types import ModelRef
from edgeloop.data.dataset import Dataset, Modality
from edgeloop.optimize.rebuild import rebuild, rebuild_plan
from edgeloop.optimize.recipe import Recipe
from edgeloop.sdk import node_training as nt
from edgeloop.sdk.control_client import ControlClient

CLASSES = ("c0", "c1", "c2")
# Two worker processes (training, then export + quantization): ~10 s of CPU; the wall time
# grows with the machine's load (a test beside others on 2 cores)
WAIT_S = 300.0


def _int8_variant(onnx_file: Path, work: Path) -> Path:
    """The optimize stage's static-INT8 variant of ``onnx_file`` (calibrated on its training
    blobs, parity on others)."""
    x, y = _blobs(150, 1, False)
    cal = Dataset("train", x[:100], y[:100], CLASSES, Modality.TABULAR)
    test = Dataset("test", x[125:], y[125:], CLASSES, Modality.TABULAR)
    return rebuild(Recipe.parse("static-int8"), onnx_file, cal, test, work)[-1].path


def _ops(path: Path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def _served_file(home: Path, sha256: str) -> Path:
    for path in home.rglob("*.onnx"):
        if hashlib.sha256(path.read_bytes()).hexdigest() == sha256:
            return path
    raise AssertionError(f"no .onnx under {home} hashes to {sha256}")


def test_an_int8_edge_variant_trains_from_its_parents_checkpoint_and_serves_int8(
    tmp_path: Path,
) -> None:
    ckpt, fp32, manifest = _model(tmp_path)
    edge = _int8_variant(fp32, tmp_path / "q")
    parent = ModelRef("blobs", 1)
    edge_manifest = dataclasses.replace(
        manifest, name="blobs-edge", parent=parent, recipe={"recipe": "static-int8"}
    )
    pruned = dataclasses.replace(
        edge_manifest, name="blobs-pruned",
        recipe={"recipe": "prune-structured(ratio=0.5)+static-int8"},
    )  # fmt: skip
    field_x, field_y = _blobs(48, 5, True)
    check_x, check_y = _blobs(30, 9, True)  # never trained on: what the node's server answers
    with control_process(tmp_path / "ctl", None, "--tick-s", "0.1") as ctl:
        token = (tmp_path / "ctl" / "control" / "admin.token").read_text().strip()
        with ControlClient(ctl.url, token) as client:
            client.publish_model(fp32, manifest, checkpoint=ckpt)
            client.publish_model(edge, edge_manifest)
            client.publish_model(edge, pruned)
            files = {"old_data": nt.put_npz(client, *_blobs(60, 7, False)),
                     "replay": nt.put_npz(client, *_blobs(100, 1, False))}  # fmt: skip
            data = nt.put_npz(client, field_x, field_y)
            node = AgentProcess(tmp_path / "node", ctl.url, poll_s=0.2,
                                enroll_token=client.enrollment_token()["token"])  # fmt: skip
            try:
                node_id = node.wait_enrolled()["node_id"]
                name = client.node(node_id)["name"]
                client.label(node_id, {"role": "trainer"})
                with pytest.raises(ConfigError) as refused:
                    nt.start(client, node_id, "blobs-pruned:1", 1, data, files=files)
                spec = {"name": "d1", "model": "blobs-edge:1",
                        "selector": {"labels": {"role": "trainer"}},
                        "plan": {"soak_s": 0, "watch_s": 0.3}}  # fmt: skip
                rollout = client.deploy(spec)
                assert client.wait_rollout(rollout["rollout_id"], DONE)["state"] == "COMPLETED"
                before = [node.predict(row.tolist()).json()["prediction"] for row in check_x]
                opts = {"lr": 0.01, "max_forgetting_pp": 2.0}
                job = nt.start(client, node_id, "blobs-edge:1", 20, data, files=files,
                               options=opts)  # fmt: skip
                done = nt.wait(client, job, WAIT_S)
                status = node.status()
                after = [node.predict(row.tolist()).json()["prediction"] for row in check_x]
                served = _served_file(tmp_path / "node", status["active"]["sha256"])
            finally:
                node.stop()
    r = done["result"]
    lineage = f"blobs-edge:1+{name}.1"
    assert done["state"] == "done", done["error"]
    assert job["rebuild"] == {"parent": "blobs:1", "recipe": "static-int8"}
    assert r["installed"] and r["outcome"] == "committed" and r["lineage"] == lineage
    assert r["rebuilt"]["from"] == "blobs:1" and r["rebuilt"]["recipe"] == "static-int8"
    assert r["rebuilt"]["checkpoint"] == "the parent's checkpoint"
    assert r["rebuilt"]["int_compute_nodes"] > 0 and r["rebuilt"]["float_compute_nodes"] == 0
    # calibrated on the 36 new samples trained on + the 100 seeded replay rows, not the hold-out
    assert r["rebuilt"]["calibration_samples"] == 36 + 100
    assert r["reason"].startswith("rebuilt static-int8, scored with ONNX Runtime: accepted")
    assert r["new_accuracy_after"] >= max(0.9, r["new_accuracy_before"])
    assert r["forgetting_pp"] <= 2.0 and r["old_samples"] == 60
    assert r["fp32"]["reason"].startswith("left to the rebuilt model's check")
    assert r["export_peak_rss_mb"] > 0 and r["peak_rss_mb"] > 0 and r["worker_wall_s"] > 0
    active = status["active"]
    assert active["lineage"] == lineage and active["parent"] == "blobs-edge:1"
    assert active["rebuilt"] == "static-int8 on the parent's checkpoint (blobs:1)"
    assert active["variant"] == "node-local" and status["torch_imported"] is False
    assert {"QuantizeLinear", "DequantizeLinear"} <= _ops(served)  # an INT8 model is served
    acc_before = np.mean(np.asarray(before) == check_y)
    acc_after = np.mean(np.asarray(after) == check_y)
    assert acc_after >= 0.9 and acc_after > acc_before
    message = str(refused.value)
    assert "prune-structured(ratio=0.5)+static-int8" in message and "cannot redo" in message
    assert "static-int8" in (refused.value.hint or "")


@pytest.mark.parametrize(
    ("recipe", "fmt", "says"),
    [
        ({"recipe": "qat"}, "onnx", "step(s) qat a node cannot redo"),
        ({"recipe": "static-int8"}, "tflite", "is a tflite file"),
        ({"recipe": "fp32"}, "onnx", "its parent's FP32 file"),
        ({}, "onnx", "records no optimization recipe"),
    ],
)
def test_a_variant_a_node_cannot_rebuild_is_refused_naming_its_recipe(
    recipe: dict[str, str], fmt: str, says: str
) -> None:
    with pytest.raises(ConfigError, match="model m-edge:1") as refused:
        rebuild_plan(recipe, fmt, "m-edge:1")
    assert says in str(refused.value)
    assert str(rebuild_plan({"recipe": "dynamic-int8+static-int8"}, "onnx", "x:1")) == (
        "dynamic-int8+static-int8"
    )
