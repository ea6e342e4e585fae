"""A local fleet with shared imports (`fleet up --shared-imports`): agents and their torch
workers forked from two zygotes, one federated round across two real agents."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from tests.federated.fl_fleet_helpers import wait_clients, wait_task

from edgeloop.federated.partition import Partition
from edgeloop.sdk.fl_data import FlData
from edgeloop.sdk.local_fleet import up

pytestmark = pytest.mark.slow


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _children(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def test_a_round_runs_across_agents_forked_from_a_torch_free_zygote(tmp_path: Path) -> None:
    data = FlData("digits", Partition.parse("iid"))
    with up(tmp_path, 2, fl_data=data, shared_imports=True) as fleet:
        agents_z, workers_z = fleet.zygotes
        assert (agents_z.name, workers_z.name) == ("agents", "workers")
        sockets = [Path(z.url.removeprefix("unix:")) for z in fleet.zygotes]
        with fleet.admin(timeout_s=60) as admin:
            wait_clients(admin, 2)
            body = {"model": "digits-mlp", "rounds": 1, "clients_per_round": 2,
                    "min_clients": 2, "deadline_s": 60.0,
                    "local": {"lr": 0.1, "epochs": 1, "batch_size": 32}}  # fmt: skip
            doc = wait_task(admin, admin.call("POST", "/api/v1/fl/tasks", json=body)["task_id"])
        assert doc["state"] == "done" and doc["reason"] is None, doc
        assert len(doc["history"][0]["participants"]) == 2
        assert doc["history"][0]["num_samples"] == 1437
        for agent in fleet.agents:  # separate processes, forked from the agents' zygote
            status = httpx.get(agent.url + "/agent/status").json()
            assert status["torch_imported"] is False and status["pid"] == agent.pid
            assert _parent(agent.pid) == agents_z.pid
        workers = _children(workers_z.pid)
        assert len(workers) == 2  # one torch worker per node, forked from the workers' zygote
    for pid in (*workers, *(a.pid for a in fleet.agents), agents_z.pid, workers_z.pid):
        assert not Path(f"/proc/{pid}").exists(), pid  # stopped and reaped
    assert not any(s.exists() for s in sockets)
