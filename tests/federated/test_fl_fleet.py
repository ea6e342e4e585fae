"""Federated rounds across real processes: one `edgeloop control`, three `edgeloop agent`s.

`fleet up --fl-data digits --partition iid` gives each agent its own share; each agent's
federated worker trains in its own torch process and talks to the control plane over HTTP with
its node token. The tiny model (digits-mlp, 2,410 parameters) keeps rounds at milliseconds of
training: the time goes to process start-up. The 20-round, 5-agent measurement is
bench/fl_fleet_bench.py (docs/federated.md).
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import sqlalchemy as sa
from tests.federated.fl_fleet_helpers import wait_clients, wait_task
from typer.testing import CliRunner

from edgeloop.cli.app import app
from edgeloop.control import fl_store
from edgeloop.core.errors import ConfigError, ConflictError, NotFoundError
from edgeloop.core.settings import Settings
from edgeloop.federated.accountant import PrivacyAccountant
from edgeloop.federated.models import fl_model
from edgeloop.federated.partition import Partition
from edgeloop.pipeline.federated_stage import FederatedStageResult, federated_stage
from edgeloop.pipeline.federated_stage_report import federated_html
from edgeloop.sdk.control_client import ControlClient
from edgeloop.sdk.fl_data import FlData
from edgeloop.sdk.local_fleet import LocalFleet, up

pytestmark = pytest.mark.slow

PARAMS = fl_model("digits-mlp").num_params


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFleet]:
    folder = tmp_path_factory.mktemp("fl-fleet")
    with up(folder, 3, fl_data=FlData("digits", Partition.parse("iid"))) as running:
        yield running


@pytest.fixture(scope="module")
def admin(fleet: LocalFleet) -> Iterator[ControlClient]:
    with fleet.admin(timeout_s=120) as client:
        wait_clients(client, 3)
        yield client


def _names(admin: ControlClient) -> dict[str, str]:
    return {n["node_id"]: n["name"] for n in admin.nodes()}


def test_a_task_trains_across_three_agents_and_registers_its_model(
    fleet: LocalFleet, admin: ControlClient
) -> None:
    runner = CliRunner()
    args = ["--dir", str(fleet.folder), "--format", "json"]
    started = runner.invoke(app, ["fl", "start", "--model", "digits-mlp", "--rounds", "3",
                                  "--clients-per-round", "3", "--min-clients", "3",
                                  "--deadline-s", "60", "--lr", "0.1", *args])  # fmt: skip
    assert started.exit_code == 0, (started.output, started.exception)
    task_id = json.loads(started.stdout)["task_id"]
    doc = wait_task(admin, task_id)
    assert doc["state"] == "done" and doc["reason"] is None, doc
    history = doc["history"]
    assert [h["round"] for h in history] == [1, 2, 3]
    for h in history:  # round 3's accuracy: the final evaluation step's
        assert len(h["participants"]) == 3 and h["dropouts"] == [] and h["rejected"] == {}
        assert h["num_samples"] == 1437  # the whole train split, across the three shares
        assert h["bytes_up"] == 3 * 4 * PARAMS and h["bytes_down"] == 3 * 4 * PARAMS
        assert h["eval_samples"] == 360  # the three test shares are the held-out set
        assert 0.0 <= h["accuracy"] <= 1.0 and h["client_loss"] > 0
    # The clients' training loss falls round after round (SGD from the same seeded model).
    losses = [h["client_loss"] for h in history[:3]]
    assert losses[0] > losses[1] > losses[2]
    assert doc["initial_evaluation"]["eval_samples"] == 360
    reg = doc["registration"]
    assert reg["state"] == "registered" and reg["lineage"]["federated_task"] == task_id
    rows = {m["ref"]: m for m in admin.models()}
    assert reg["ref"] in rows and rows[reg["ref"]]["format"] == "onnx"
    # The same task through `fl status` and `fl list`.
    shown = runner.invoke(app, ["fl", "status", task_id, *args])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["rounds_done"] == 3
    listing = runner.invoke(app, ["fl", "list", *args])
    assert listing.exit_code == 0, listing.output
    listed = json.loads(listing.stdout)["tasks"]
    assert [t["task_id"] for t in listed if t["state"] == "done"] == [task_id]
    # Training ran in the workers' own processes: the agents never imported torch.
    for agent in fleet.agents:
        assert httpx.get(agent.url + "/agent/status").json()["torch_imported"] is False


def test_bad_tasks_and_out_of_round_updates_are_refused(
    fleet: LocalFleet, admin: ControlClient
) -> None:
    base = {"model": "digits-mlp", "rounds": 1, "clients_per_round": 2, "min_clients": 2}
    with pytest.raises(NotFoundError, match="digits-cnn, digits-mlp"):
        admin.call("POST", "/api/v1/fl/tasks", json={**base, "model": "resnet"})
    with pytest.raises(ConfigError, match="min_clients"):
        admin.call("POST", "/api/v1/fl/tasks", json={**base, "min_clients": 3})
    with pytest.raises(NotFoundError, match="fedavg"):
        admin.call("POST", "/api/v1/fl/tasks", json={**base, "strategy": "fedsgd"})
    with pytest.raises(ConfigError, match="secure aggregation"):
        admin.call("POST", "/api/v1/fl/tasks", json={**base, "secagg": True, "dp": {}})
    with pytest.raises(ConfigError, match="secure aggregation"):
        admin.call("POST", "/api/v1/fl/tasks", json={**base, "secagg": True, "strategy": "median"})
    with pytest.raises(NotFoundError):
        admin.call("GET", "/api/v1/fl/tasks/nope")
    assert [t["state"] for t in admin.call("GET", "/api/v1/fl/tasks")["tasks"]] == ["done"]
    # A node posting to a round that is not open is refused (409), and cannot act as the admin.
    node = json.loads((fleet.agents[0].home / "agent" / "identity.json").read_text())
    task_id = admin.call("GET", "/api/v1/fl/tasks")["tasks"][0]["task_id"]
    with ControlClient(fleet.control_url, node["node_token"]) as as_node:
        path = f"/api/v1/fl/tasks/{task_id}/rounds/1/updates/{node['node_id']}"
        with pytest.raises(ConflictError, match="not open"):
            as_node.call("POST", path, content=b"\0" * 4 * PARAMS,
                         headers={"X-Fl-Update": '{"num_samples": 10}'})  # fmt: skip
        with pytest.raises(Exception, match="admin"):
            as_node.call("POST", "/api/v1/fl/tasks", json=base)


def test_secure_aggregation_holds_masked_inputs_only_and_survives_a_silent_client(
    fleet: LocalFleet, admin: ControlClient
) -> None:
    plain = admin.call("GET", "/api/v1/fl/tasks")["tasks"][0]["task_id"]
    plain_round = admin.call("GET", f"/api/v1/fl/tasks/{plain}")["history"][0]
    victim = fleet.agents[1]
    hook = victim.home / "agent" / "fl" / "stall-at-round"
    hook.write_text("1:unmask")  # it sends its masked input, then never its unmasking shares
    body = {"model": "digits-mlp", "rounds": 1, "clients_per_round": 3, "min_clients": 2,
            "deadline_s": 4.0, "secagg": True, "local": {"lr": 0.1}}  # fmt: skip
    task_id = admin.call("POST", "/api/v1/fl/tasks", json=body)["task_id"]
    marker = hook.parent / "stalled-at-round-1"
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert time.monotonic() < deadline, "the victim never reached the unmasking step"
        time.sleep(0.1)
    # What the control plane holds now: keys, sealed shares and masked vectors, no update.
    engine = sa.create_engine(Settings.load(fleet.folder / "control").db_url)
    try:
        with engine.connect() as conn:
            m = fl_store.messages
            rows = list(conn.execute(sa.select(m).where(m.c.task_id == task_id)))
    finally:
        engine.dispose()
    assert {r.kind for r in rows} <= {"advertise", "share", "mask", "unmask", "download"}
    masked = [r.payload for r in rows if r.kind == "mask"]
    assert len(masked) == 3 and all(len(p) == 8 * (PARAMS + 1) for p in masked)
    for payload in masked:  # read as the fixed-point numbers they would be: far from n * x
        values = np.frombuffer(payload, dtype="<i8").astype(np.float64) / 2**24
        assert np.median(np.abs(values)) > 1e6
    doc = wait_task(admin, task_id)
    hook.unlink()
    names = _names(admin)
    first = doc["history"][0]
    assert doc["state"] == "done", doc
    assert len(first["participants"]) == 3 and first["dropouts"] == []
    assert [names[n] for n in first["dropped_after_masking"]] == [victim.name]
    assert first["secagg_threshold"] == 2 and first["num_samples"] == 1437
    # The unmasked mean is the plain FedAvg of the same round (same seeds), to fixed point.
    assert first["update_norm"] == pytest.approx(plain_round["update_norm"], abs=1e-5)
    assert first["client_loss"] == pytest.approx(plain_round["client_loss"], abs=1e-6)


def test_dp_reports_epsilon_and_refuses_the_round_past_the_target(
    fleet: LocalFleet, admin: ControlClient
) -> None:
    accountant = PrivacyAccountant.for_fleet(1.0, 2, 3, delta=1e-5)  # 2 of 3 clients a round
    target = (accountant.epsilon(2) + accountant.epsilon(3)) / 2
    body = {"model": "digits-mlp", "rounds": 3, "clients_per_round": 2, "min_clients": 2,
            "deadline_s": 30.0, "dp": {"noise_multiplier": 1.0, "clip_norm": 1.0,
                                       "target_epsilon": target}}  # fmt: skip
    doc = wait_task(admin, admin.call("POST", "/api/v1/fl/tasks", json=body)["task_id"])
    assert doc["state"] == "done" and "round 3 refused" in doc["reason"], doc
    assert [h["epsilon"] for h in doc["history"]] == pytest.approx(
        [accountant.epsilon(1), accountant.epsilon(2)]
    )
    assert doc["epsilon"] == pytest.approx(accountant.epsilon(2))
    assert doc["registration"]["state"] == "registered"


def test_the_quickstart_stage_reports_each_round_across_the_three_agents(
    fleet: LocalFleet, admin: ControlClient, tmp_path: Path
) -> None:
    # The quickstart's federated stage on this fleet (the quickstart's own fleet is the same
    # shape: 3 agents, digits IID shares); 2 rounds of the tiny model keep it to seconds.
    result = federated_stage(fleet, "digits", tmp_path, rounds=2, model="digits-mlp")
    assert isinstance(result, FederatedStageResult), result
    body = result.to_dict()["federated"]
    assert body["state"] == "done" and body["reason"] is None, body
    assert body["data"]["held_out_samples"] == 360
    assert sum(s["train"] for s in body["data"]["shares"].values()) == 1437
    assert [r["round"] for r in body["rounds_table"]] == [1, 2]
    for row in body["rounds_table"]:
        assert row["participants"] == ["node-1", "node-2", "node-3"] and row["dropouts"] == []
        assert row["eval_samples"] == 360 and 0.0 <= row["accuracy"] <= 1.0
        assert row["bytes_up"] == row["bytes_down"] == 3 * 4 * PARAMS and row["seconds"] > 0
    assert body["final_accuracy"] == body["rounds_table"][-1]["accuracy"]
    ref = body["registration"]["ref"]
    assert body["registration"]["state"] == "registered" and ref.startswith("fl-digits-mlp:")
    assert ref in {m["ref"] for m in admin.models()}
    assert Path(body["plot"]).read_bytes()[:4] == b"\x89PNG" and ref in federated_html(body)


def test_an_agent_killed_mid_round_is_a_dropout_and_the_round_completes(
    fleet: LocalFleet, admin: ControlClient
) -> None:
    victim = fleet.agents[2]
    stall = victim.home / "agent" / "fl"
    (stall / "stall-at-round").write_text("1")
    body = {"model": "digits-mlp", "rounds": 1, "clients_per_round": 3, "min_clients": 2,
            "deadline_s": 6.0}  # fmt: skip
    task_id = admin.call("POST", "/api/v1/fl/tasks", json=body)["task_id"]
    marker = stall / "stalled-at-round-1"
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert time.monotonic() < deadline, "the victim never received round 1"
        time.sleep(0.1)
    os.kill(victim.pid, signal.SIGKILL)  # mid-round: it holds the model, never answers
    doc = wait_task(admin, task_id)
    names = _names(admin)
    first = doc["history"][0]
    assert doc["state"] == "done", doc
    assert [names[n] for n in first["dropouts"]] == [victim.name]
    assert sorted(names[n] for n in first["participants"]) == ["node-1", "node-2"]
    assert first["num_samples"] == 479 + 479 and first["update_norm"] > 0
    assert doc["registration"]["state"] == "registered"


def test_a_round_with_fewer_answers_than_min_clients_fails_the_task(
    fleet: LocalFleet, admin: ControlClient
) -> None:
    # node-3 was killed above; it stays a candidate for ELIGIBLE_S after its last poll, so ask
    # all three and need three: the task fails with the reason, nothing half-applied.
    body = {"model": "digits-mlp", "rounds": 2, "clients_per_round": 3, "min_clients": 3,
            "deadline_s": 3.0}  # fmt: skip
    doc = admin.call("POST", "/api/v1/fl/tasks", json=body)
    doc = wait_task(admin, doc["task_id"])
    assert doc["state"] == "failed"
    assert "round 1" in doc["reason"] and (
        "eligible" in doc["reason"] or "needs 3" in doc["reason"]
    )
    assert doc["registration"] is None
