"""A control-plane restart mid-round across live agents (issue 14 part 8).

One `edgeloop control` on a fixed port and two `edgeloop agent`s (`fleet up --fl-data digits`).
A 3-round task runs once undisturbed (the reference), then again while the control plane is
SIGKILLed in the middle of round 2 (one node holds round 2's model, the other may already have
answered) and started again on the same home and database. The task must finish with the same
rounds, participants and figures as the reference: no round applied twice, none lost.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.federated.fl_fleet_helpers import wait_clients, wait_task

from edgeloop.federated.partition import Partition
from edgeloop.sdk.control_client import ControlClient
from edgeloop.sdk.fl_data import FlData
from edgeloop.sdk.local_fleet import ADMIN_TOKEN_ENV, LocalFleet, free_port, up

pytestmark = pytest.mark.slow

TASK = {"model": "digits-mlp", "rounds": 3, "clients_per_round": 2, "min_clients": 2,
        "deadline_s": 60.0, "selector": "fairness", "local": {"lr": 0.1}}  # fmt: skip


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFleet]:
    folder = tmp_path_factory.mktemp("fl-restart")
    port = free_port()  # fixed, so the agents find the restarted control plane where it was
    with up(folder, 2, fl_data=FlData("digits", Partition.parse("iid")),
            control_args=["--port", str(port)]) as running:  # fmt: skip
        yield running


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
    deadline = time.monotonic() + 60
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
        wait_clients(admin, 2)
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
            deadline = time.monotonic() + 60
            while True:
                try:
                    admin.call("GET", "/healthz")
                    break
                except Exception:
                    assert time.monotonic() < deadline and restarted.poll() is None
                    time.sleep(0.2)
            doc = wait_task(admin, task_id)
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
