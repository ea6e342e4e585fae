"""A real fleet (control plane and agent as OS processes) deploys a version that carries a
reference profile: the profile made at registration travels through the signed TUF path and
the node monitors the served version with it (its ``/monitor`` state is not "no profile")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tests.agent.agent_process import AgentProcess
from tests.control.process import control_process
from tests.tiny_models import make_linear_onnx

from edgeloop.core.settings import Settings
from edgeloop.core.types import Manifest, TensorSpec
from edgeloop.registry import Registry
from edgeloop.registry.profiles import profile_model
from edgeloop.sdk.control_client import ControlClient

MANIFEST = Manifest("lin", "onnx", (TensorSpec("input", (None, 4)),),
                    (TensorSpec("output", (None, 3)),))  # fmt: skip
DONE = {"COMPLETED", "HALTED", "ROLLED_BACK"}


def test_a_deployed_profile_is_monitored_on_the_node(home: Path, tmp_path: Path) -> None:
    model = make_linear_onnx(tmp_path / "v1.onnx", seed=1)
    reference = np.random.default_rng(0).standard_normal((200, 4)).astype(np.float32)
    with Registry.open(Settings.load(home)) as registry:
        local = registry.publish(model, MANIFEST, profile=profile_model(model, reference))
        _, profile = registry.profile(local.ref)
    assert profile is not None and local.manifest.profile is not None
    with control_process(tmp_path / "ctl", None, "--tick-s", "0.1") as ctl:
        token = (tmp_path / "ctl" / "control" / "admin.token").read_text().strip()
        with ControlClient(ctl.url, token) as client:
            client.publish_version(model, local, profile=profile)
            agent = AgentProcess(tmp_path / "node", ctl.url, poll_s=0.2,
                                 enroll_token=client.enrollment_token()["token"])  # fmt: skip
            try:
                agent.wait_enrolled()
                plan = {"soak_s": 0, "watch_s": 0.5}
                started = client.deploy({"name": "d1", "model": "lin:1", "plan": plan})
                assert client.wait_rollout(started["rollout_id"], DONE)["state"] == "COMPLETED"
                status = agent.status()
                assert status["active"]["version"] == 1
                for row in reference[:20]:
                    assert agent.infer("lin", [float(v) for v in row]).status_code == 200
                view = agent.http.get("/v2/models/lin/monitor").json()
                assert view["state"] != "no profile", view
                assert view["state"] == "active", view
                assert view["samples_seen"] >= 1
            finally:
                agent.stop()
