"""Capture on a node, end to end across real processes: ``edgeloop control`` and
``edgeloop agent``. A deployment's ``serving.capture`` reaches the agent; the uncertain requests
it serves (and only those) travel through its durable outbox to the control plane, a label
posted to the node for one of them follows, and the control plane assembles them into a data
set version with its provenance. A bad policy is refused at deploy time, naming the value.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from tests.agent.agent_process import AgentProcess
from tests.control.process import control_process
from tests.tiny_models import make_linear_onnx

from edgeloop.agent.outbox import ItemKind, Outbox
from edgeloop.core.errors import ConfigError, ConflictError, DataError
from edgeloop.core.types import Manifest, TensorSpec
from edgeloop.monitoring import DriftMonitor
from edgeloop.sdk.control_client import ControlClient

CLASSES = ("cat", "dog", "owl")
MANIFEST = Manifest("lin", "onnx", (TensorSpec("input", (None, 4)),),
                    (TensorSpec("output", (None, 3)),), labels=CLASSES)  # fmt: skip
DONE = {"COMPLETED", "HALTED", "ROLLED_BACK"}
WAIT_S = 60.0


def _rows_and_top1(model: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows from near zero (the model unsure) to far out (sure), and the model's top-1."""
    scale = np.linspace(0.0, 3.0, n, dtype=np.float32)[:, None]
    rows = np.random.default_rng(5).standard_normal((n, 4)).astype(np.float32) * scale
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return rows, np.asarray(session.run(None, {"input": rows})[0]).max(axis=1)


def _profile(model: Path, path: Path) -> Path:
    x = np.random.default_rng(0).standard_normal((300, 4)).astype(np.float32)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    probs = np.asarray(session.run(None, {"input": x})[0])
    path.write_bytes(DriftMonitor.fit(x, probs, probs.argmax(axis=1)).profile.to_bytes())
    return path


def _until(check: Any, what: str) -> Any:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_uncertain_requests_reach_the_control_plane_and_become_a_data_set(
    tmp_path: Path,
) -> None:
    model = make_linear_onnx(tmp_path / "lin.onnx", seed=3)
    rows, top1 = _rows_and_top1(model, 40)
    expected = {f"r{i}" for i in np.flatnonzero(top1 < 0.6)}
    assert 2 < len(expected) < 40
    with control_process(tmp_path / "ctl", None, "--tick-s", "0.1") as ctl:
        token = (tmp_path / "ctl" / "control" / "admin.token").read_text().strip()
        with ControlClient(ctl.url, token) as client:
            client.publish_model(model, MANIFEST, profile=_profile(model, tmp_path / "p.npz"))
            zero_cap = {"policy": "uncertain", "max_bytes": 0}
            with pytest.raises(ConfigError, match="max_bytes 0"):  # refused before any node
                client.deploy({"name": "bad", "model": "lin:1", "serving": {"capture": zero_cap}})
            with pytest.raises(ConfigError, match="unknown capture reason 'hard'"):
                bad = {"capture": "uncertain:0.6,hard"}
                client.deploy({"name": "bad", "model": "lin:1", "serving": bad})
            agent = AgentProcess(tmp_path / "node", ctl.url, poll_s=0.2,
                                 enroll_token=client.enrollment_token()["token"])  # fmt: skip
            try:
                node_id = agent.wait_enrolled()["node_id"]
                capture = {"policy": "uncertain:0.6", "per_class": 50}
                spec = {"name": "d1", "model": "lin:1", "plan": {"soak_s": 0, "watch_s": 0.5},
                        "serving": {"capture": capture}}  # fmt: skip
                rollout = client.deploy(spec)
                assert client.wait_rollout(rollout["rollout_id"], DONE)["state"] == "COMPLETED"
                for i, row in enumerate(rows):
                    body = {"features": row.tolist(), "request_id": f"r{i}"}
                    assert agent.http.post("/predict", json=body).status_code == 200
                labelled = sorted(expected)[0]
                answer = agent.http.post(
                    "/predict/labels", json={"request_id": labelled, "label": 1}
                )
                assert answer.status_code == 200, answer.text
                status = agent.status()["capture"]["lin:1"]

                def arrived() -> list[dict[str, Any]] | None:
                    items = client.telemetry(kind="capture", model="lin")
                    return items if len(items) == len(expected) + 1 else None

                items = _until(arrived, "every capture at the control plane")
                route = "/api/v1/datasets/captures"
                made = client.call("POST", route, json={"model": "lin", "name": "lin-field"})
                with pytest.raises(ConflictError, match="lin-field:1 already holds"):
                    client.call("POST", route, json={"model": "lin", "name": "lin-field"})
                with pytest.raises(DataError, match="no captured samples of model 'nope'"):
                    client.call("POST", route, json={"model": "nope", "name": "x"})
                with pytest.raises(ConfigError, match="'hard'"):
                    client.call("POST", route, json={"model": "lin", "name": "x",
                                                     "reasons": ["hard"]})  # fmt: skip
                with pytest.raises(ConfigError, match="since"):
                    client.call("POST", route, json={"model": "lin", "name": "x",
                                                     "since": "yesterday"})  # fmt: skip
            finally:
                agent.stop()
    assert status["kept"] == len(expected) and status["seen"] == 40
    samples = [i["payload"] for i in items if i["payload"]["type"] == "sample"]
    assert {s["request_id"] for s in samples} == expected  # the uncertain ones, only those
    assert all(i["node_id"] == node_id for i in items)
    assert all(s["reasons"] == ["uncertain"] and s["confidence"] < 0.6 for s in samples)
    assert all(s["model_version"] == "1" and s["inputs"][0]["shape"] == [1, 4] for s in samples)
    assert (made["ref"], made["samples"], made["labelled"]) == ("lin-field:1", len(expected), 1)
    assert made["classes"] == list(CLASSES)
    prov = made["provenance"]
    assert prov["node_ids"] == [node_id] and prov["model"] == "lin"
    assert prov["reasons"] == ["uncertain"] and prov["time_range"][0] <= prov["time_range"][1]
    assert made["captured"]["model_versions"] == ["1"]


def test_a_full_outbox_drops_samples_first_then_captures_then_metrics(tmp_path: Path) -> None:
    """Captured rows are chosen, so they outlive sampled ones; metrics snapshots (superseded by
    the next) outlive neither; events go last (telemetry.md)."""
    blob = "x" * 1000
    with Outbox.open(tmp_path / "o.sqlite", max_items=4) as box:
        for kind in (ItemKind.EVENT, ItemKind.METRICS, ItemKind.CAPTURE, ItemKind.SAMPLE):
            box.put(kind, {"k": kind.value, "b": blob})
        box.put(ItemKind.CAPTURE, {"k": "capture", "b": blob})  # 5 items: one must go
        assert box.stats().dropped == {"sample": 1}
        box.put(ItemKind.SAMPLE, {"k": "sample", "b": blob})  # a sample is the victim again
        box.put(ItemKind.CAPTURE, {"k": "capture", "b": blob})
        dropped = box.stats().dropped
    assert dropped["sample"] == 2 and dropped["capture"] == 1 and "metrics" not in dropped
