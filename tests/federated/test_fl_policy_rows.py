"""The node policy, candidates, declines and registration leases, in-process (no agents).

A real SQLite database carries the rows a real fleet would write (a worker's poll with its
power state, a node's enrollment and report); the power state is read from folders laid out
as the kernel's power-supply class; the training worker's budget runs on real torch.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from edgeloop.agent.fl_policy import NodePolicy, PowerState, load_policy, read_power
from edgeloop.control import fl_rounds, fl_store, fl_wire, tables
from edgeloop.control.fl_candidates import candidates
from edgeloop.control.fl_store import TaskSpec, TaskState
from edgeloop.core.errors import ConfigError, DataError
from edgeloop.federated.models import fl_model
from edgeloop.federated.selection import PowerSource
from edgeloop.registry.database import Database, connect

PARAMS = fl_model("digits-mlp").num_params
MAINS, BATTERY = PowerSource.MAINS, PowerSource.BATTERY


def _open(path: Path) -> Database:
    db = connect(f"sqlite:///{path}")
    fl_store.create_tables(db)
    return db


def _supply(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text + "\n")
    return root


def test_the_power_state_is_read_as_the_kernel_lays_it_out(tmp_path: Path) -> None:
    ac = {"AC/type": "Mains", "AC/online": "1"}
    bat = {"BAT0/type": "Battery", "BAT0/capacity": "37", "BAT0/status": "Discharging"}
    assert read_power(_supply(tmp_path / "a", ac)) == PowerState(MAINS, None)
    on_battery = read_power(_supply(tmp_path / "b", {**bat, "AC/type": "Mains", "AC/online": "0"}))
    assert on_battery == PowerState(BATTERY, 0.37)
    plugged = {**bat, "BAT0/status": "Charging", **ac}
    assert read_power(_supply(tmp_path / "c", plugged)) == PowerState(MAINS, 0.37)
    mouse = {"hid/type": "Battery", "hid/scope": "Device", "hid/status": "Discharging"}
    unknown = read_power(_supply(tmp_path / "d", mouse))
    assert unknown.source is PowerSource.UNKNOWN and "no mains or battery" in str(unknown.reason)
    assert read_power(tmp_path / "none").source is PowerSource.UNKNOWN


def test_the_policy_declines_on_battery_and_refuses_a_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    assert load_policy(path) == NodePolicy()  # no file: the defaults
    low, high = PowerState(BATTERY, 0.2), PowerState(BATTERY, 0.9)
    assert NodePolicy().refusal(PowerState(MAINS)) is None
    assert NodePolicy().refusal(PowerState(PowerSource.UNKNOWN)) is None
    assert "trains on mains only" in str(NodePolicy().refusal(high))
    tolerant = NodePolicy(train_on_battery=True, min_battery=0.5)
    assert tolerant.refusal(high) is None and "below" in str(tolerant.refusal(low))
    idle = NodePolicy(idle_s=30)
    assert idle.refusal(PowerState(MAINS), served=0) is None
    assert "3 inference requests in the last 30 s" in str(idle.refusal(PowerState(MAINS), 3))
    assert NodePolicy().refusal(PowerState(MAINS), served=3) is None  # no idle rule
    path.write_text('{"train_on_battery": true, "cpu_seconds_per_round": 2.5}')
    assert load_policy(path) == NodePolicy(train_on_battery=True, cpu_seconds_per_round=2.5)
    for bad, words in (('{"budget": 1}', "object of"), ('{"min_battery": 3}', "min_battery"),
                       ('{"train_on_battery": "yes"}', "true or false"), ("[", "not JSON"),
                       ('{"cpu_seconds_per_round": 0}', "must be > 0"),
                       ('{"idle_s": -1}', "idle_s")):  # fmt: skip
        path.write_text(bad)
        with pytest.raises(ConfigError, match=words):
            load_policy(path)


def _enroll(conn: sa.Connection, node: str, cores: int, load: float, memory: float) -> None:
    conn.execute(tables.nodes.insert().values(
        node_id=node, name=node, token_hash=node * 8, labels="{}", capabilities=json.dumps(
            {"cpu_count": cores}), device_class="x86_64-cpu", enrolled_at=0.0,
        desired_revision=0, reported=json.dumps(
            {"resources": {"load_1m": load, "memory_available_mb": memory}}),
    ))  # fmt: skip


def test_candidates_carry_fleet_status_and_the_resource_selector_logs_why(tmp_path: Path) -> None:
    db = _open(tmp_path / "control.db")
    now = time.time()
    with db.write() as c:
        _enroll(c, "n1", 4, 2.0, 900.0)
        fl_wire.heard(c, "n1", 100, 10, now, (MAINS, None))
        fl_wire.heard(c, "n2", 300, 10, now, (BATTERY, 0.1))
        fl_wire.heard(c, "n3", 50, 10, now - 60, (MAINS, None))  # polled a minute ago
        found = {x.node_id: x for x in candidates(c, now, [])}
        spec = TaskSpec(model="digits-mlp", rounds=1, clients_per_round=3, min_clients=1,
                        selector="resource")  # fmt: skip
        task = fl_rounds.create(c, spec, np.zeros(PARAMS), now)
        fl_rounds.advance(c, task, now)
        record = json.loads(fl_rounds.task_row(c, task).history)[0]
    n1 = found["n1"]
    assert (n1.online, n1.power, n1.load_per_core, n1.memory_available_mb) == (
        True, MAINS, 0.5, 900.0)  # fmt: skip
    assert n1.device_class == "x86_64-cpu" and found["n2"].device_class == "unknown"
    assert found["n2"].battery == 0.1 and found["n3"].online is False
    assert record["selected"] == ["n1"]
    assert record["why"] == {"n1": "ranked_in", "n2": "low_battery", "n3": "offline"}
    assert record["why_detail"]["n1"] == (
        "rank 1 (mains, 100 samples, x86_64-cpu, load 0.50/core, 900 MiB free)"
    )
    db.engine.dispose()


def test_too_few_chosen_fails_the_task_at_the_deadline_with_each_reason(tmp_path: Path) -> None:
    db = _open(tmp_path / "control.db")
    now = time.time()
    spec = TaskSpec(model="digits-mlp", rounds=1, clients_per_round=2, min_clients=2,
                    deadline_s=5.0, selector="resource",
                    selector_params={"min_battery": 0.3})  # fmt: skip
    with db.write() as c:
        fl_wire.heard(c, "n1", 100, 10, now, (MAINS, None))
        fl_wire.heard(c, "n2", 100, 10, now, (BATTERY, 0.25))
        task = fl_rounds.create(c, spec, np.zeros(PARAMS), now)
        fl_rounds.advance(c, task, now)
        assert fl_rounds.task_row(c, task).phase == "selecting"  # waits for the deadline
        fl_rounds.advance(c, task, now + 6)
        row = fl_rounds.task_row(c, task)
    reason = json.loads(row.result)["reason"]
    assert row.state == "failed" and "chose 1 clients, the task needs 2" in reason
    assert "n2: low_battery battery 0.25" in reason
    with pytest.raises(ConfigError, match="does not take"):
        TaskSpec(model="digits-mlp", selector="resource", selector_params={"battery": 1.0})
    with pytest.raises(ConfigError, match="parameters"):
        TaskSpec(model="digits-mlp", selector="resource", selector_params={"max_load": "x"})
    db.engine.dispose()


def test_a_decline_is_an_answer_with_its_reason_not_a_dropout(tmp_path: Path) -> None:
    db = _open(tmp_path / "control.db")
    now = time.time()
    spec = TaskSpec(model="digits-mlp", rounds=1, clients_per_round=2, min_clients=1,
                    deadline_s=600)  # fmt: skip
    with db.write() as c:
        fl_wire.heard(c, "n1", 100, 10, now)
        fl_wire.heard(c, "n2", 100, 10, now)
        task = fl_rounds.create(c, spec, np.zeros(PARAMS), now)
        fl_rounds.advance(c, task, now)
        for bad in ({"decline": ""}, {"decline": 7}):
            with pytest.raises(DataError, match="reason"):
                fl_wire.put_update(c, task, 1, "n2", bad, b"", now)
        with pytest.raises(DataError, match="no body"):
            fl_wire.put_update(c, task, 1, "n2", {"decline": "on battery"}, b"\0" * 4, now)
        fl_wire.put_update(c, task, 1, "n2", {"decline": "on battery (battery at 9%)"}, b"", now)
        assert fl_wire.assignment(c, "n2") is None  # asked once; it answered
        body = np.ones(PARAMS, dtype="<f4").tobytes()
        header = {"num_samples": 32, "metrics": {"loss": 1.0, "cpu_s": 0.25}}
        fl_wire.put_update(c, task, 1, "n1", header, body, now)
        fl_rounds.advance(c, task, now)  # everyone answered: no wait for the deadline
        row = fl_rounds.task_row(c, task)
    first = json.loads(row.history)[0]
    assert row.phase == "evaluating" and first["participants"] == ["n1"]
    assert first["declined"] == {"n2": "on battery (battery at 9%)"} and first["dropouts"] == []
    assert first["client_cpu_s"] == {"n1": 0.25} and first["client_samples"] == {"n1": 32}
    db.engine.dispose()


def test_a_registration_claimed_by_a_killed_plane_is_taken_up_after_its_lease(
    tmp_path: Path,
) -> None:
    db = _open(tmp_path / "control.db")
    now = time.time()
    with db.write() as c:
        task = fl_rounds.create(c, TaskSpec(model="digits-mlp"), np.zeros(PARAMS), now)
        fl_rounds.end_task(c, fl_rounds.task_row(c, task), TaskState.DONE, now, None)
        assert fl_wire.pending_registrations(c, now) == [task]
        assert fl_wire.claim_registration(c, task, now) is not None
        assert fl_wire.claim_registration(c, task, now + 1) is None  # one claimant at a time
        assert fl_wire.pending_registrations(c, now + 1) == []
        later = now + fl_wire.REGISTER_LEASE_S + 1  # the claimant died with its process
        assert fl_wire.pending_registrations(c, later) == [task]
        assert fl_wire.claim_registration(c, task, later) is not None
    db.engine.dispose()


def test_the_worker_stops_at_its_cpu_budget_and_is_unchanged_without_one(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from edgeloop.training.federated_client import LocalSGD, train_local
    from edgeloop.training.federated_worker import Node, build, init

    rng = np.random.default_rng(0)
    x = rng.random((100, 1, 8, 8), dtype=np.float32)
    y = rng.integers(0, 10, 100)
    data = tmp_path / "data.npz"
    np.savez(data, x_train=x, y_train=y, x_test=x[:20], y_test=y[:20])
    init("digits-mlp", 0, tmp_path / "w.npy")
    weights = np.load(tmp_path / "w.npy")
    weights.astype("<f4").tofile(tmp_path / "w.f32")
    node = Node(data)

    def ask(budget: dict[str, float | None]) -> tuple[dict[str, object], np.ndarray]:
        answer = node.answer({
            "kind": "train", "model": "digits-mlp", "weights": str(tmp_path / "w.f32"),
            "round": 2, "client_id": 3, "local": {"lr": 0.1}, "out": str(tmp_path / "o.f32"),
            "budget": budget})  # fmt: skip
        return answer, np.fromfile(tmp_path / "o.f32", dtype="<f4")

    free, trained = ask({"cpu_s": None, "wall_s": None})
    reference = train_local(build("digits-mlp"), weights.astype(np.float32), torch.from_numpy(x),
                            torch.from_numpy(y), node_id="3", round=2, seed=2003,
                            config=LocalSGD(lr=0.1))  # fmt: skip
    assert free["num_samples"] == 100 and np.array_equal(trained, reference.weights.astype("<f4"))
    metrics = free["metrics"]
    assert isinstance(metrics, dict) and metrics["stopped_by_cpu_budget"] == 0.0
    for budget, flag in (({"cpu_s": 1e-6}, "stopped_by_cpu_budget"),
                         ({"wall_s": 0.0}, "stopped_by_deadline")):  # fmt: skip
        stopped, partial = ask(budget)
        metrics = stopped["metrics"]
        assert isinstance(metrics, dict)
        assert stopped["num_samples"] == 32 and metrics["samples_seen"] == 32.0
        assert metrics[flag] == 1.0 and metrics["cpu_s"] > 0
        assert not np.array_equal(partial, weights.astype("<f4"))  # one minibatch was applied
