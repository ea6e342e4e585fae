"""End to end on a real local fleet: `fleet up --nodes 3 --tls`, a staged rollout, a broken v2
caught.

Every process is real: one `edgeloop control` and three `edgeloop agent` processes on loopback
ports, each with its own home folder; models travel as signed TUF targets. Every wire is HTTPS
with the fleet's throwaway CA (issue 17 item 5): enrollment, polls, reports, downloads,
telemetry, admin calls and inference.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from tests.tiny_models import make_linear_onnx

from edgeloop.core.tls import client_context
from edgeloop.core.types import Manifest, TensorSpec
from edgeloop.sdk.control_client import ControlClient
from edgeloop.sdk.local_fleet import LocalFleet, up

pytestmark = pytest.mark.slow

FEATURES, CLASSES = 4, 3


def _manifest(name: str) -> Manifest:
    return Manifest(
        name=name,
        format="onnx",
        inputs=(TensorSpec("input", (None, FEATURES), "float32"),),
        outputs=(TensorSpec("output", (None, CLASSES), "float32"),),
    )


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFleet]:
    folder = tmp_path_factory.mktemp("fleet")
    with up(folder, 3, agent_args=["--poll-s", "0.5"], tls=True) as running:
        assert running.control_url.startswith("https://")
        assert all(agent.url.startswith("https://") for agent in running.agents)
        yield running


def _infer(fleet: LocalFleet, url: str, name: str, x: np.ndarray) -> tuple[str, np.ndarray]:
    body = {
        "inputs": [
            {
                "name": "input",
                "shape": list(x.shape),
                "datatype": "FP32",
                "data": x.ravel().tolist(),
            }
        ]
    }
    verify = client_context(fleet.client_tls) if fleet.client_tls else True
    r = httpx.post(f"{url}/v2/models/{name}/infer", json=body, timeout=30, verify=verify)
    assert r.status_code == 200, r.text
    doc = r.json()
    out = doc["outputs"][0]
    return str(doc.get("model_version")), np.asarray(out["data"], np.float32).reshape(out["shape"])


def test_staged_rollout_then_a_broken_v2_is_caught_on_the_first_wave(
    fleet: LocalFleet, tmp_path: Path
) -> None:
    with fleet.admin() as admin:
        _rollout_then_broken_v2(admin, fleet, tmp_path)


def _rollout_then_broken_v2(admin: ControlClient, fleet: LocalFleet, tmp_path: Path) -> None:
    assert {n["name"] for n in admin.nodes()} == {"node-1", "node-2", "node-3"}

    v1 = make_linear_onnx(tmp_path / "lin.onnx", FEATURES, CLASSES, seed=1)
    published = admin.publish_model(v1, _manifest("lin"))
    plan = {
        "waves": ["1", "100%"],
        "soak_s": 1,
        "watch_s": 1,
        "wave_timeout_s": 120,
        "guard": {"require_self_test": True},
    }
    rollout = admin.deploy({"name": "lin-prod", "model": published["ref"], "plan": plan})
    done = admin.wait_rollout(rollout["rollout_id"], {"COMPLETED", "HALTED", "ROLLED_BACK"}, 180)
    assert done["state"] == "COMPLETED", done["events"][-5:]
    # The first wave held one node; it got the model before the others.
    waves = sorted((n["wave"], node) for node, n in done["nodes"].items())
    assert [w for w, _ in waves] == [0, 1, 1]

    # Every node serves v1, and answers as ONNX Runtime does on the same file.
    x = np.random.default_rng(0).standard_normal((5, FEATURES)).astype(np.float32)
    expected = ort.InferenceSession(str(v1)).run(None, {"input": x})[0]
    for agent in fleet.agents:
        version, y = _infer(fleet, agent.url, "lin", x)
        assert version == str(published["version"])
        np.testing.assert_allclose(y, expected, atol=1e-5)

    # v2 is deliberately broken (its bytes are no model): the first wave catches it.
    broken = tmp_path / "lin-v2.onnx"
    broken.write_bytes(b"\x08\x07this is not an onnx model" * 64)
    v2 = admin.publish_model(broken, _manifest("lin"))
    bad = admin.deploy({"name": "lin-prod", "model": v2["ref"], "plan": plan})
    end = admin.wait_rollout(bad["rollout_id"], {"COMPLETED", "ROLLED_BACK"}, 180)
    assert end["state"] == "ROLLED_BACK", end["events"][-5:]
    reached = [node for node, n in end["nodes"].items() if n["wave"] == 0]
    never = [node for node, n in end["nodes"].items() if n["wave"] != 0]
    assert len(reached) == 1 and len(never) == 2
    for node in never:  # the rest of the fleet never received a document naming v2
        assert end["nodes"][node]["revision"] in (None, 0) or end["nodes"][node].get("ref") is None

    # The whole fleet still serves v1, the first-wave node included.
    for agent in fleet.agents:
        version, y = _infer(fleet, agent.url, "lin", x)
        assert version == str(published["version"])
        np.testing.assert_allclose(y, expected, atol=1e-5)
    for node in admin.nodes():
        active = (node["reported"] or {}).get("active") or {}
        assert active.get("sha256") == published["artifact_sha256"], node["name"]


def test_the_cli_publishes_deploys_lists_and_rolls_back(fleet: LocalFleet, tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from edgeloop.cli.app import app

    where = ["--dir", str(fleet.folder), "--format", "json"]

    def cli(*args: str) -> dict[str, Any]:
        result = CliRunner().invoke(app, ["fleet", *args, *where])
        assert result.exit_code == 0, result.output
        return dict(json.loads(result.stdout))

    status = cli("status")
    assert all(p["running"] for p in [status["control"], *status["agents"]])
    before = {n["name"]: (n["reported"] or {}).get("active") for n in cli("nodes")["nodes"]}

    v3 = make_linear_onnx(tmp_path / "lin3.onnx", FEATURES, CLASSES, seed=3)
    published = cli("publish", str(v3), "--name", "lin")
    rollout = cli(
        "deploy", published["ref"], "--waves", "1,100%", "--soak-s", "1", "--watch-s", "1", "--wait"
    )
    assert rollout["state"] == "COMPLETED"
    for node in cli("nodes")["nodes"]:
        assert node["reported"]["active"]["sha256"] == published["artifact_sha256"]
    assert rollout["rollout_id"] in {r["rollout_id"] for r in cli("rollouts")["rollouts"]}

    back = cli("rollback", rollout["rollout_id"])
    assert back["state"] == "ROLLED_BACK"
    with fleet.admin() as admin:
        admin.wait_rollout(rollout["rollout_id"], {"ROLLED_BACK"}, 120)
        # Each agent acts on its reverted document at its next poll and reports: wait for it.
        deadline = time.monotonic() + 120
        while True:
            now = {n["name"]: (n["reported"] or {}).get("active") for n in admin.nodes()}
            if all((now[k] or {}).get("sha256") == (before[k] or {}).get("sha256") for k in before):
                break
            if time.monotonic() > deadline:
                break  # the assertions below name the node that did not go back
            time.sleep(0.5)
    for name, active in now.items():
        assert (active or {}).get("sha256") == (before[name] or {}).get("sha256"), name
