"""Benchmark jobs on a real control plane process: a node takes and answers only its own jobs,
and bad requests are 4xx with nothing queued."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.control.process import ControlProcess, control_process, enroll

ADMIN = "bench-api-admin-token-0123456789abcdef"


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ControlProcess, list[Any]]]:
    home: Path = tmp_path_factory.mktemp("bench") / "home"
    with control_process(home, None, admin_token=ADMIN) as proc:
        nodes = []
        for name in ("cam", "gw"):
            grant = httpx.post(f"{proc.url}/api/v1/enrollment-tokens", json={}, headers=_admin())
            nodes.append({**enroll(proc.url, grant.json()["token"], name), "name": name})
        yield proc, nodes


def _admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN}"}


def _as(node: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {node['node_token']}"}


def test_another_nodes_token_can_neither_take_nor_answer_a_job(
    plane: tuple[ControlProcess, list[Any]],
) -> None:
    proc, (cam, gw) = plane
    job = httpx.post(f"{proc.url}/api/v1/benchmarks", headers=_admin(),
                     json={"node": "cam", "model": "lin:1", "runs": 5}).json()  # fmt: skip
    assert job["state"] == "queued" and job["node_id"] == cam["node_id"]
    mine, theirs = (f"{proc.url}/api/v1/nodes/{n['node_id']}/benchmarks" for n in (cam, gw))
    assert httpx.get(f"{mine}/next", headers=_as(gw)).status_code == 403  # gw as cam
    assert httpx.get(f"{theirs}/next", headers=_as(gw)).status_code == 204  # gw has none
    forged = httpx.post(f"{theirs}/{job['job_id']}", headers=_as(gw), json={"error": "x"})
    assert forged.status_code == 404
    got = httpx.get(f"{proc.url}/api/v1/benchmarks/{job['job_id']}", headers=_admin()).json()
    assert got["state"] == "queued"  # unchanged by the forged answer
    taken = httpx.get(f"{mine}/next", headers=_as(cam)).json()
    assert taken["job_id"] == job["job_id"] and taken["state"] == "running"
    answer = httpx.post(f"{mine}/{job['job_id']}", headers=_as(cam), json={"error": "no lin:1"})
    assert answer.status_code == 204
    done = httpx.get(f"{proc.url}/api/v1/benchmarks/{job['job_id']}", headers=_admin()).json()
    assert (done["state"], done["error"]) == ("failed", "no lin:1")
    again = httpx.post(f"{mine}/{job['job_id']}", headers=_as(cam), json={"measurement": {}})
    assert again.status_code == 404  # an ended job takes no second answer


def test_bad_requests_are_4xx_and_queue_nothing(
    plane: tuple[ControlProcess, list[Any]],
) -> None:
    proc, (cam, _) = plane
    url = f"{proc.url}/api/v1/benchmarks"
    unknown = httpx.post(url, headers=_admin(), json={"node": "nope", "model": "lin:1"})
    assert unknown.status_code == 404 and "cam, gw" in unknown.text
    for body in ({"node": "cam", "model": "lin"}, {"node": "cam", "model": "lin:1", "runs": 0},
                 {"node": "cam", "model": "lin:1", "extra": 1}):  # fmt: skip
        assert httpx.post(url, headers=_admin(), json=body).status_code == 400, body
    assert (
        httpx.post(url, headers=_as(cam), json={"node": "cam", "model": "lin:1"}).status_code == 403
    )
    assert httpx.get(f"{url}/nope", headers=_admin()).status_code == 404
    nxt = f"{proc.url}/api/v1/nodes/{cam['node_id']}/benchmarks/next"
    assert httpx.get(nxt, headers=_as(cam)).status_code == 204  # nothing was queued
