"""On-device incremental training on a real node (issue 13 part 5), across real processes:
``edgeloop control`` and ``edgeloop agent``. The node serves a tiny MLP with a capture policy;
its captured rows of a shifted field distribution are labelled on the node; a training job
(control/train_api.py) makes the agent run the training worker and install the result as a
node-local version through its updater, which the reconcile loop leaves alone until a new
deployment replaces it. A run the forgetting check rejects leaves the active version as it
was; a node started without the training capability answers with an error naming it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.agent.agent_process import AgentProcess
from tests.control.process import control_process
from typer.testing import CliRunner

from edgeloop import EdgeMLManager, OnDeviceTraining
from edgeloop.cli.app import app
from edgeloop.core.errors import DataError
from edgeloop.core.types import Manifest
from edgeloop.sdk import node_training as nt
from edgeloop.sdk.control_client import ControlClient
from edgeloop.sdk.site import Site

DONE = {"COMPLETED", "HALTED", "ROLLED_BACK"}
WAIT_S = 90.0


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


def test_a_node_trains_on_its_labelled_captures_and_serves_the_node_local_version(
    tmp_path: Path,
) -> None:
    ckpt, onnx, manifest = _model(tmp_path)
    old_x, old_y = _blobs(60, 7, False)
    seed_x, seed_y = _blobs(100, 1, False)
    field_x, field_y = _blobs(48, 5, True)
    with control_process(tmp_path / "ctl", None, "--tick-s", "0.1") as ctl:
        token = (tmp_path / "ctl" / "control" / "admin.token").read_text().strip()
        with ControlClient(ctl.url, token) as client:
            client.publish_model(onnx, manifest, checkpoint=ckpt, profile=_profile(onnx, tmp_path))
            files = {"old_data": nt.put_npz(client, old_x, old_y),
                     "replay": nt.put_npz(client, seed_x, seed_y)}  # fmt: skip
            node = AgentProcess(tmp_path / "node", ctl.url, poll_s=0.2,
                                enroll_token=client.enrollment_token()["token"])  # fmt: skip
            try:
                node_id = node.wait_enrolled()["node_id"]
                client.label(node_id, {"role": "trainer"})
                name = client.node(node_id)["name"]
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
                edge = EdgeMLManager(Site("t", ctl.url, token))
                try:
                    rejected = OnDeviceTraining(edge).incremental_train(
                        "blobs:1", "captures", epochs=1, node=node_id, max_forgetting_pp=-50.0
                    )
                finally:
                    edge.close()
                (tmp_path / "bad.npz").write_bytes(b"not an npz")
                args = ["fleet", "train", node_id, "blobs:1", "--data", str(tmp_path / "bad.npz")]
                cli = CliRunner().invoke(app, [*args, "--control", ctl.url, "--token", token])
                after_reject = node.status()["active"]
                caps = client.node(node_id)["capabilities"]
                after = [node.predict(row.tolist()).json() for row in field_x]
                again = client.deploy({**spec, "name": "d2"})
                assert client.wait_rollout(again["rollout_id"], DONE)["state"] == "COMPLETED"
                replaced = node.wait_for(
                    lambda s: s["active"] if "lineage" not in s["active"] else None,
                    what="the new deployment to replace the node-local version",
                )
            finally:
                node.stop()
    r = done["result"]
    lineage = f"blobs:1+{name}.1"  # the node's name (its host name here) and its first run
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
    from edgeloop.serving.capture_sink import CaptureLog

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
    from edgeloop.serving.capture_sink import CaptureLog, Kept

    log = CaptureLog(tmp_path, 20_000)
    for i in range(200):
        head = {"type": "label", "model": "m", "sample_id": f"s{i}", "label": i % 3}
        log(Kept(head, {}))
        log.close()  # written now (no event loop here)
    sizes = [p.stat().st_size for p in log.files()]
    assert log.rotations > 0 and sum(sizes) <= 20_000
    last = log.path.read_text().splitlines()[-1]
    assert '"s199"' in last  # the newest records are kept
