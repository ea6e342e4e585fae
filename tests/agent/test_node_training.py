"""On-device incremental training on a real node (issue 13 part 5), across real processes:
``edgeloop control`` and ``edgeloop agent``. The node serves a tiny MLP with a capture policy;
its captured rows of a shifted field distribution are labelled on the node; a training job
(control/train_api.py) makes the agent run the training worker and install the result as a
node-local version through its updater, which the reconcile loop leaves alone until a new
deployment replaces it. A run the forgetting check rejects leaves the active version as it
was; a node started without the training capability answers with an error naming it. The
INT8 edge variant of the same model trains from its parent's checkpoint on the same node (issue
13 part 6). The process tests share one control plane and node (``fleet``, module scope): each
pays for the run it checks, not for starting a fleet.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from tests.agent.agent_process import AgentProcess
from tests.control.process import control_process
from typer.testing import CliRunner

from edgeloop import EdgeMLManager, OnDeviceTraining
from edgeloop.cli.app import app
from edgeloop.core.errors import ConfigError, DataError
from edgeloop.core.types import Manifest, ModelRef
from edgeloop.data.dataset import Dataset, Modality
from edgeloop.optimize.rebuild import rebuild
from edgeloop.optimize.recipe import Recipe
from edgeloop.sdk import node_training as nt
from edgeloop.sdk.control_client import ControlClient
from edgeloop.sdk.site import Site

DONE = {"COMPLETED", "HALTED", "ROLLED_BACK"}
WAIT_S = 90.0
# The variant's two worker processes (training, then export + quantization): ~10 s of CPU; the
# wall time grows with the machine's load (a test beside others on 2 cores)
VARIANT_WAIT_S = 300.0
CLASSES = ("c0", "c1", "c2")
FIGURES = ("new_accuracy_before", "new_accuracy_after", "forgetting_pp", "epochs_run",
           "worker_wall_s")  # printed: the margins the assertions keep  # fmt: skip


def _blobs(n: int, seed: int, shifted: bool) -> tuple[np.ndarray, np.ndarray]:
    """Three Gaussian blobs in 4 features; ``shifted``: halved and moved +5 along the feature
    the old centres never used (a drift the model can learn without unlearning the old)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n, dtype=np.int64) % 3
    x = (np.eye(3, 4, dtype=np.float32) * 4.0)[y] + rng.normal(0, 0.5, (n, 4)).astype(np.float32)
    if shifted:
        x[:, :3] *= 0.5
        x[:, 3] += 5.0
    return x.astype(np.float32), y


def _model(folder: Path) -> tuple[Path, Path, Manifest]:
    """A tiny MLP trained on the blobs: its checkpoint folder, its ONNX file, its manifest."""
    import torch

    from edgeloop.data.dataset import Dataset, Modality, Splits
    from edgeloop.formats.onnx_info import inspect_onnx
    from edgeloop.training import ArchConfig, FitConfig, fit, save_checkpoint
    from edgeloop.training.on_device_output import export_light
    from edgeloop.training.zoo import deployable

    torch.set_num_threads(1)
    x, y = _blobs(150, 1, False)
    ds = Dataset("blobs", x, y, ("c0", "c1", "c2"), Modality.TABULAR)
    idx = np.arange(150)
    splits = Splits(ds.subset(idx[:100], "train"), ds.subset(idx[100:125], "val"),
                    ds.subset(idx[125:], "test"), seed=0)  # fmt: skip
    arch = ArchConfig("mlp", (4,), 3, width=4)
    fitted = fit(arch, splits, FitConfig(epochs=30, seed=0), progress=False)
    ckpt = folder / "blobs-mlp"
    save_checkpoint(ckpt, fitted.module, arch, fitted.config, fitted.test_metrics,
                    dataset=splits.train)  # fmt: skip
    onnx = folder / "blobs.onnx"
    export_light(deployable(fitted.module, arch), x[:32], onnx)  # parity-checked, ~1 s
    info = inspect_onnx(onnx)
    manifest = Manifest(name="blobs", format="onnx", inputs=info.inputs, outputs=info.outputs,
                        labels=("c0", "c1", "c2"))  # fmt: skip
    return ckpt, onnx, manifest


def _profile(model: Path, folder: Path) -> Path:
    """The drift monitor's reference (inputs and outputs): labels join answers only with one."""
    import onnxruntime as ort

    from edgeloop.monitoring import DriftMonitor

    x, _ = _blobs(150, 1, False)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    probs = np.asarray(session.run(None, {session.get_inputs()[0].name: x})[0])
    path = folder / "blobs.profile.npz"
    path.write_bytes(DriftMonitor.fit(x, probs, probs.argmax(axis=1)).profile.to_bytes())
    return path


def _job(client: ControlClient, **body: Any) -> dict[str, Any]:
    job = nt.start(client, body.pop("node"), body.pop("model"), body.pop("epochs", 20),
                   body.pop("data", "captures"), **body)  # fmt: skip
    return nt.wait(client, job, WAIT_S)


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


@dataclass(frozen=True, slots=True)
class Fleet:
    """One control plane and one trainer node, shared by this module's process tests (each
    deploys what it trains; the node keeps a training folder, counter and replay buffer per
    model name, so ``blobs`` and ``blobs-edge`` runs do not see each other)."""

    home: Path
    url: str
    token: str
    client: ControlClient
    node: AgentProcess
    node_id: str
    name: str
    files: dict[str, str]  # old_data and replay, uploaded


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """``blobs:1`` (FP32, checkpoint, drift profile), its static-INT8 child ``blobs-edge:1`` and
    ``blobs-pruned:1`` (a recipe a node cannot redo) published; a node enrolled, labelled."""
    tmp = tmp_path_factory.mktemp("fleet")
    ckpt, onnx_file, manifest = _model(tmp)
    edge = _int8_variant(onnx_file, tmp / "q")
    edge_manifest = dataclasses.replace(
        manifest, name="blobs-edge", parent=ModelRef("blobs", 1), recipe={"recipe": "static-int8"}
    )
    pruned = dataclasses.replace(
        edge_manifest, name="blobs-pruned",
        recipe={"recipe": "prune-structured(ratio=0.5)+static-int8"},
    )  # fmt: skip
    with control_process(tmp / "ctl", None, "--tick-s", "0.1") as ctl:
        token = (tmp / "ctl" / "control" / "admin.token").read_text().strip()
        with ControlClient(ctl.url, token) as client:
            profile = _profile(onnx_file, tmp)
            client.publish_model(onnx_file, manifest, checkpoint=ckpt, profile=profile)
            client.publish_model(edge, edge_manifest)
            client.publish_model(edge, pruned)
            files = {"old_data": nt.put_npz(client, *_blobs(60, 7, False)),
                     "replay": nt.put_npz(client, *_blobs(100, 1, False))}  # fmt: skip
            node = AgentProcess(tmp / "node", ctl.url, poll_s=0.2,
                                enroll_token=client.enrollment_token()["token"])  # fmt: skip
            try:
                node_id = node.wait_enrolled()["node_id"]
                client.label(node_id, {"role": "trainer"})
                name = client.node(node_id)["name"]
                yield Fleet(tmp, ctl.url, token, client, node, node_id, name, files)
            finally:
                node.stop()


def test_a_node_trains_on_its_labelled_captures_and_serves_the_node_local_version(
    fleet: Fleet, tmp_path: Path
) -> None:
    client, node, node_id, files = fleet.client, fleet.node, fleet.node_id, fleet.files
    field_x, field_y = _blobs(48, 5, True)
    trainer = {"labels": {"role": "trainer"}}
    spec = {"name": "d1", "model": "blobs:1", "selector": trainer,
            "plan": {"soak_s": 0, "watch_s": 0.3},
            "serving": {"capture": {"policy": "random:1.0"}}}  # fmt: skip
    rollout = client.deploy(spec)
    assert client.wait_rollout(rollout["rollout_id"], DONE)["state"] == "COMPLETED"
    before = []
    for i, row in enumerate(field_x):
        body = {"features": row.tolist(), "request_id": f"f{i}"}
        before.append(node.http.post("/predict", json=body).raise_for_status().json())
        label = {"request_id": f"f{i}", "label": int(field_y[i])}
        assert node.http.post("/predict/labels", json=label).status_code == 200
    time.sleep(1.5)  # the local capture log is written about once a second
    opts = {"lr": 0.01, "replay_share": 0.5, "max_forgetting_pp": 2.0}
    done = _job(client, node=node_id, model="blobs:1", files=files, options=opts)
    status = node.status()
    time.sleep(1.0)  # several reconcile passes: the node-local version stays
    kept = node.status()["active"]
    # through the SDK: no data set registered, so forgetting is checked on a held-out
    # slice of the node's replay buffer (the seed and the 48 rows of the first run)
    edge = EdgeMLManager(Site("t", fleet.url, fleet.token))
    try:
        rejected = OnDeviceTraining(edge).incremental_train(
            "blobs:1", "captures", epochs=1, node=node_id, max_forgetting_pp=-50.0
        )
    finally:
        edge.close()
    (tmp_path / "bad.npz").write_bytes(b"not an npz")
    args = ["fleet", "train", node_id, "blobs:1", "--data", str(tmp_path / "bad.npz")]
    cli = CliRunner().invoke(app, [*args, "--control", fleet.url, "--token", fleet.token])
    after_reject = node.status()["active"]
    caps = client.node(node_id)["capabilities"]
    after = [node.predict(row.tolist()).json() for row in field_x]
    again = client.deploy({**spec, "name": "d2"})
    assert client.wait_rollout(again["rollout_id"], DONE)["state"] == "COMPLETED"
    replaced = node.wait_for(
        lambda s: s["active"] if "lineage" not in s["active"] else None,
        what="the new deployment to replace the node-local version",
    )
    r = done["result"]
    print("captures run:", {k: r.get(k) for k in FIGURES})
    lineage = f"blobs:1+{fleet.name}.1"  # the node's name (its host name here) and its first run
    assert done["state"] == "done", done["error"]
    assert r["installed"] and r["outcome"] == "committed" and r["lineage"] == lineage
    assert r["data_source"].startswith("captures: 48 labelled of 48")
    assert r["new_accuracy_after"] >= max(0.9, r["new_accuracy_before"])
    assert r["forgetting_pp"] <= 2.0 and r["old_samples"] == 60
    assert r["worker_wall_s"] > 0 and r["peak_rss_mb"] > 0 and r["threads"] == 1
    active = status["active"]
    assert active["lineage"] == lineage and active["parent"] == "blobs:1"
    assert active["variant"] == "node-local" and active["serving"] is True
    assert status["updater"]["state"] == "IDLE" and status["torch_imported"] is False
    assert kept["lineage"] == lineage  # not "repaired" back to the desired version
    acc_before = np.mean([b["prediction"] == y for b, y in zip(before, field_y, strict=True)])
    acc_after = np.mean([a["prediction"] == y for a, y in zip(after, field_y, strict=True)])
    assert acc_after >= 0.9 and acc_after > acc_before  # what the node's server answers
    assert rejected["accepted"] is False and rejected["ref"] is None
    assert "at most -50.0 pp" in rejected["reason"] and "rejected" in rejected["reason"]
    assert rejected["ran_on"].startswith(f"node {node_id}") and rejected["epochs_run"] == 1
    assert isinstance(cli.exception, DataError) and "not an .npz with arrays x and y" in str(
        cli.exception
    )  # the `edgeloop` entry point prints it and exits with its code
    assert after_reject["sha256"] == active["sha256"]  # the active version untouched
    assert caps["train"] is True and caps["torch"]  # advertised at enrollment
    assert replaced["version"] == 1 and replaced["variant"] != "node-local"


def test_an_int8_edge_variant_trains_from_its_parents_checkpoint_and_serves_int8(
    fleet: Fleet,
) -> None:
    """Issue 13 part 6: the fleet serves ``blobs-edge:1``, a static-INT8 child of the FP32
    ``blobs:1`` that holds the torch checkpoint. A training job for the variant makes the control
    plane send the parent's checkpoint and the variant's recipe; the node fine-tunes the parent's
    weights, quantizes the export again (calibrated on its own training-side samples) and decides
    on the quantized file scored with ONNX Runtime against the served variant; the node-local
    version keeps the variant's name and serves an INT8 model. A variant whose recipe has a
    torch-side step is refused at once, naming the recipe."""
    client, node, node_id, files = fleet.client, fleet.node, fleet.node_id, fleet.files
    field_x, field_y = _blobs(48, 5, True)
    check_x, check_y = _blobs(30, 9, True)  # never trained on: what the node's server answers
    data = nt.put_npz(client, field_x, field_y)
    with pytest.raises(ConfigError) as refused:
        nt.start(client, node_id, "blobs-pruned:1", 1, data, files=files)
    spec = {"name": "e1", "model": "blobs-edge:1",
            "selector": {"labels": {"role": "trainer"}},
            "plan": {"soak_s": 0, "watch_s": 0.3}}  # fmt: skip
    rollout = client.deploy(spec)
    assert client.wait_rollout(rollout["rollout_id"], DONE)["state"] == "COMPLETED"
    before = [node.predict(row.tolist()).json()["prediction"] for row in check_x]
    opts = {"lr": 0.01, "max_forgetting_pp": 2.0}
    job = nt.start(client, node_id, "blobs-edge:1", 20, data, files=files, options=opts)
    done = nt.wait(client, job, VARIANT_WAIT_S)
    status = node.status()
    after = [node.predict(row.tolist()).json()["prediction"] for row in check_x]
    served = _served_file(node.home, status["active"]["sha256"])
    r = done["result"]
    print("variant run:", {k: r.get(k) for k in FIGURES})
    lineage = f"blobs-edge:1+{fleet.name}.1"  # its own model folder: the first blobs-edge run
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


def test_a_node_that_cannot_train_answers_naming_the_capability(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The agent's answer to a job when ``train`` is false (here: EDGELOOP_AGENT_NO_TRAIN, as
    an agent started with it advertises at enrollment); nothing is fetched or run."""
    import asyncio

    from edgeloop.agent.capabilities import probe
    from edgeloop.agent.home import AgentHome
    from edgeloop.agent.train_worker import TrainWorker
    from edgeloop.agent.updater import Updater
    from edgeloop.serving.capture_files import CaptureLog

    monkeypatch.setenv("EDGELOOP_AGENT_NO_TRAIN", "1")
    home = AgentHome.under(tmp_path / "node")
    worker = TrainWorker(home, Updater(home), lambda: None, CaptureLog(tmp_path / "c", 1000), "n")
    job = {"job_id": "j1", "model": "blobs:1", "data": "captures", "files": {}, "epochs": 1}
    answer = asyncio.run(worker.train(None, "", job, None))  # type: ignore[arg-type]
    caps = probe()
    assert "capability 'train' is false" in answer["error"]
    assert "EDGELOOP_AGENT_NO_TRAIN" in answer["error"]
    assert caps["train"] is False and "EDGELOOP_AGENT_NO_TRAIN" in caps["train_reason"]
    assert not (home.root / "training").exists()


def test_the_local_capture_log_stays_under_its_byte_cap(tmp_path: Path) -> None:
    from edgeloop.serving.capture_files import CaptureLog
    from edgeloop.serving.capture_record import Kept

    log = CaptureLog(tmp_path, 20_000)
    for i in range(200):
        head = {"type": "label", "model": "m", "sample_id": f"s{i}", "label": i % 3}
        log(Kept(head, {}))
        log.close()  # written now (no event loop here)
    sizes = [p.stat().st_size for p in log.files()]
    assert log.rotations > 0 and sum(sizes) <= 20_000
    last = log.path.read_text().splitlines()[-1]
    assert '"s199"' in last  # the newest records are kept
