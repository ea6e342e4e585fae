"""Nodes' resources and policies, and a control-plane restart mid-round, across live agents.

One `edgeloop control` on a fixed port and two `edgeloop agent`s (`fleet up --fl-data digits`).

- Resource-aware selection and the node's power policy (issue 14 parts 2 and 4): each agent
  reads its power state from a folder laid out as the kernel's power-supply class (this
  machine has no battery; node-1's says mains online, node-2's a battery discharging at 20%).
  The resource selector asks node-1 only and logs node-2 as ``low_battery``; a selector that
  asks node-2 anyway gets a decline with the node's reason, recorded as a decline, not a
  dropout; allowed on battery but idle-only, it declines once it served an inference
  request. node-1's CPU budget (1 us a round) stops its training after one minibatch: 32
  samples used, its CPU seconds reported.
- Restart (part 8): a 3-round task runs once undisturbed (the reference), then again while the
  control plane is SIGKILLed in the middle of round 2 (node-1 holds round 2's model, node-2
  may already have answered) and started again on the same home and database. The task must
  finish with the same rounds, participants and figures as the reference: no round applied
  twice, none lost.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.federated.fl_fleet_helpers import wait_clients, wait_task
from typer.testing import CliRunner

from edgeloop.cli.app import app
from edgeloop.federated.partition import Partition
from edgeloop.sdk.control_client import ControlClient
from edgeloop.sdk.fl_data import FlData
from edgeloop.sdk.local_fleet import ADMIN_TOKEN_ENV, LocalFleet, free_port, up

pytestmark = pytest.mark.slow

TASK = {"model": "digits-mlp", "rounds": 3, "clients_per_round": 2, "min_clients": 2,
        "deadline_s": 300.0, "selector": "fairness", "local": {"lr": 0.1}}  # fmt: skip


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFleet]:
    folder = tmp_path_factory.mktemp("fl-restart")
    port = free_port()  # fixed, so the agents find the restarted control plane where it was
    with up(folder, 2, fl_data=FlData("digits", Partition.parse("iid")),
            control_args=["--port", str(port)]) as running:  # fmt: skip
        yield running


def _supply(folder: Path, files: dict[str, str]) -> Path:
    """A folder laid out as /sys/class/power_supply: ``{"AC/online": "1", ...}``."""
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text + "\n")
    return folder


def _policy(fleet: LocalFleet, i: int, doc: dict[str, Any] | None) -> None:
    path = fleet.agents[i].home / "agent" / "fl" / "policy.json"
    if doc is None:
        path.unlink(missing_ok=True)
    else:
        path.write_text(json.dumps(doc))


def test_resource_selection_power_declines_and_the_cpu_budget(fleet: LocalFleet) -> None:
    mains = _supply(fleet.folder / "power-1", {"AC/type": "Mains", "AC/online": "1"})
    battery = _supply(fleet.folder / "power-2", {
        "AC/type": "Mains", "AC/online": "0", "BAT0/type": "Battery",
        "BAT0/status": "Discharging", "BAT0/capacity": "20"})  # fmt: skip
    _policy(fleet, 0, {"power_supply": str(mains), "cpu_seconds_per_round": 1e-6})
    _policy(fleet, 1, {"power_supply": str(battery)})
    with fleet.admin(timeout_s=60) as admin:
        wait_clients(admin, 2, timeout_s=180)
        names = {n["node_id"]: n["name"] for n in admin.nodes()}
        ids = {v: k for k, v in names.items()}
        deadline = time.monotonic() + 120
        while True:  # each worker sends its power state with its next poll
            said = {names[c["node_id"]]: (c["power"], c["battery"])
                    for c in admin.call("GET", "/api/v1/fl/clients")["clients"]}  # fmt: skip
            if said == {"node-1": ("mains", None), "node-2": ("battery", 0.2)}:
                break
            assert time.monotonic() < deadline, said
            time.sleep(0.2)
        started = CliRunner().invoke(app, [
            "fl", "start", "--model", "digits-mlp", "--rounds", "1", "--clients-per-round", "2",
            "--min-clients", "1", "--selector", "resource", "--selector-param", "min_battery=0.3",
            "--dir", str(fleet.folder), "--format", "json"])  # fmt: skip
        assert started.exit_code == 0, (started.output, started.exception)
        doc = wait_task(admin, json.loads(started.stdout)["task_id"])
        first = doc["history"][0]
        assert doc["state"] == "done" and first["selected"] == [ids["node-1"]], doc
        assert first["why"] == {ids["node-1"]: "ranked_in", ids["node-2"]: "low_battery"}
        assert first["why_detail"][ids["node-2"]] == "battery 0.2"
        assert "mains" in first["why_detail"][ids["node-1"]]
        # The CPU budget: one minibatch, then the update goes with what it used.
        assert first["client_samples"] == {ids["node-1"]: 32} and first["num_samples"] == 32
        assert first["client_cpu_s"][ids["node-1"]] > 0
        # A selector blind to power asks node-2 too: it declines, with its reason.
        body = {"model": "digits-mlp", "rounds": 1, "clients_per_round": 2, "min_clients": 1,
                "selector": "fairness", "deadline_s": 120.0}  # fmt: skip
        doc = wait_task(admin, admin.call("POST", "/api/v1/fl/tasks", json=body)["task_id"])
        first = doc["history"][0]
        assert doc["state"] == "done" and sorted(first["selected"]) == sorted(ids.values()), doc
        assert first["participants"] == [ids["node-1"]] and first["dropouts"] == []
        assert list(first["declined"]) == [ids["node-2"]]
        assert "on battery (battery at 20%)" in first["declined"][ids["node-2"]]
        # Allowed on battery now, but idle only: one inference request makes node-2 busy.
        _policy(fleet, 1, {"power_supply": str(battery), "train_on_battery": True,
                           "min_battery": 0.1, "idle_s": 120})  # fmt: skip
        httpx.post(fleet.agents[1].url + "/v2/models/none/infer", json={"inputs": []})
        doc = wait_task(admin, admin.call("POST", "/api/v1/fl/tasks", json=body)["task_id"])
        first = doc["history"][0]
        assert first["participants"] == [ids["node-1"]] and first["dropouts"] == []
        assert first["declined"][ids["node-2"]].startswith(
            "serving traffic: 1 inference requests in the last 120 s"
        )
    _policy(fleet, 0, None)
    _policy(fleet, 1, None)


def _start_control(fleet: LocalFleet) -> subprocess.Popen[bytes]:
    port = fleet.control_url.rsplit(":", 1)[1]
    log = (fleet.folder / "control" / "control-restarted.log").open("ab")
    env = {**os.environ, ADMIN_TOKEN_ENV: fleet.admin_token, "NO_COLOR": "1"}
    with log:
        return subprocess.Popen(
            [sys.executable, "-m", "edgeloop.cli.app", "control", "--port", port, "--home",
             str(fleet.folder / "control"), "--format", "json"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip


def _wait_marker(path: Path, what: str) -> None:
    deadline = time.monotonic() + 180
    while not path.exists():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _who(doc: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [(h["round"], sorted(h["participants"]), h["dropouts"], h["num_samples"])
            for h in doc["history"]]  # fmt: skip


def _figures(doc: dict[str, Any]) -> list[float]:
    return [h[k] for h in doc["history"] for k in ("client_loss", "update_norm", "accuracy")]


def test_a_task_survives_a_control_plane_restart_mid_round(fleet: LocalFleet) -> None:
    with fleet.admin(timeout_s=60) as admin:
        wait_clients(admin, 2, timeout_s=180)
        reference = wait_task(admin, admin.call("POST", "/api/v1/fl/tasks", json=TASK)["task_id"])
        assert reference["state"] == "done", reference
        hook = fleet.agents[0].home / "agent" / "fl" / "stall-at-round"
        hook.write_text("2")  # node-1 stops once round 2's model is in, before training
        task_id = admin.call("POST", "/api/v1/fl/tasks", json=TASK)["task_id"]
        _wait_marker(hook.parent / "stalled-at-round-2", "node-1 never received round 2")
    os.kill(fleet.control.pid, signal.SIGKILL)  # mid-round 2: its row says TRAINING
    restarted = _start_control(fleet)
    try:
        hook.unlink()  # node-1 trains round 2 and uploads to whichever plane listens now
        with ControlClient(fleet.control_url, fleet.admin_token, 60) as admin:
            deadline = time.monotonic() + 180
            while True:
                try:
                    admin.call("GET", "/healthz")
                    break
                except Exception:
                    assert time.monotonic() < deadline and restarted.poll() is None
                    time.sleep(0.2)
            doc = wait_task(admin, task_id, timeout_s=240)
    finally:
        restarted.send_signal(signal.SIGTERM)
        try:
            restarted.wait(15)
        except subprocess.TimeoutExpired:
            restarted.kill()
            restarted.wait()
    assert doc["state"] == "done" and doc["reason"] is None, doc
    assert [h["round"] for h in doc["history"]] == [1, 2, 3] and doc["rounds_done"] == 3
    # Same seeds, same answers: a round applied twice (or lost) would change every later figure.
    assert _who(doc) == _who(reference)
    assert _figures(doc) == pytest.approx(_figures(reference), abs=1e-9)
    assert doc["registration"]["state"] == "registered"
    assert doc["registration"]["lineage"]["federated_task"] == task_id
