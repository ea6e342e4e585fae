"""The agent against the real control plane (``edgeloop control``), both as OS processes: the
contract of docs/fleet-protocol.md from the agent's side, end to end through python-tuf."""

from __future__ import annotations

from pathlib import Path

from tests.agent.agent_process import AgentProcess
from tests.control.process import control_process
from tests.tiny_models import make_linear_onnx

from edgeloop.core.types import Manifest, TensorSpec
from edgeloop.sdk.control_client import ControlClient

MANIFEST = Manifest("lin", "onnx", (TensorSpec("input", (None, 4)),),
                    (TensorSpec("output", (None, 3)),))  # fmt: skip
ROW = [0.1, 0.2, 0.3, 0.4]
DONE = {"COMPLETED", "HALTED", "ROLLED_BACK"}


def test_rollout_reaches_the_agent_and_a_broken_v2_leaves_it_on_v1(tmp_path: Path) -> None:
    with control_process(tmp_path / "ctl", None, "--tick-s", "0.1") as ctl:
        token = (tmp_path / "ctl" / "control" / "admin.token").read_text().strip()
        with ControlClient(ctl.url, token) as client:
            client.publish_model(make_linear_onnx(tmp_path / "v1.onnx", seed=1), MANIFEST)
            agent = AgentProcess(tmp_path / "node", ctl.url, poll_s=0.2,
                                 enroll_token=client.enrollment_token()["token"])  # fmt: skip
            try:
                # A deployment selects the nodes enrolled when it is made: wait for this one.
                agent.wait_enrolled()
                plan = {"soak_s": 0, "watch_s": 0.5}
                first = client.deploy({"name": "d1", "model": "lin:1", "plan": plan})
                assert client.wait_rollout(first["rollout_id"], DONE)["state"] == "COMPLETED"
                status = agent.status()
                assert status["active"]["version"] == 1 and status["self_test"]["passed"]
                assert agent.infer("lin", ROW).json()["model_version"] == "1"
                node = client.node(status["node_id"])
                assert node["device_class"].endswith("-cpu") and node["reported"]["revision"] >= 1

                broken = tmp_path / "broken.onnx"
                broken.write_bytes(b"not a model " * 40)
                client.publish_model(broken, MANIFEST)
                second = client.deploy({"name": "d2", "model": "lin:2", "plan": plan})
                ended = client.wait_rollout(second["rollout_id"], {"ROLLED_BACK"})
                assert ended["state"] == "ROLLED_BACK"
                status = agent.status()
                assert status["updater"]["failed_revision"] == 2
                assert status["active"]["version"] == 1
                answer = agent.infer("lin", ROW)
                assert answer.status_code == 200 and answer.json()["model_version"] == "1"
            finally:
                agent.stop()
