"""Every field of every JSON body is checked for type and range at the edge (issue 17, item 7).

Against a real ``edgeloop control`` process: each payload below answered 500 or stored nonsense
before (``tier`` 2**63, a 20-digit model version, booleans where numbers belong, ``ttl_s: true``
made a 1-second token, ``soak_s: 1e308`` started a rollout, an ``agent_url`` object answered 503
showing the database path, ``javascript:`` URLs and 100 kB label keys were stored). Now each is a
400 naming the field, and the state (nodes, reports, tokens, rollouts) is unchanged.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.control.harness import control
from tests.control.process import ControlProcess, control_process, enroll

from edgeloop.control import fleet
from edgeloop.core.errors import StoreError

ADMIN = "wire-schemas-admin-token-0123456789"
BIG = 9223372036854775808  # 2**63: one past SQLite's largest integer
HUGE_KEY = "k" * 100_000
GOOD_REPORT = {"revision": 0}
DEPLOY = {"name": "d", "model": "lin:1"}

# (route, who calls it, body, the field the answer must name)
CASES: list[tuple[str, str, Any, str]] = [
    ("tokens", "admin", {"tier": BIG}, "tier"),
    ("tokens", "admin", {"tier": -BIG - 1}, "tier"),  # past 64 bits: the message still renders
    ("tokens", "admin", {"tier": True}, "tier"),
    ("tokens", "admin", {"tier": -1}, "tier"),
    ("tokens", "admin", {"tier": 1.5}, "tier"),
    ("tokens", "admin", {"tier": "3"}, "tier"),
    ("tokens", "admin", {"ttl_s": True}, "ttl_s"),
    ("tokens", "admin", {"ttl_s": 1e308}, "ttl_s"),
    ("tokens", "admin", {"ttl_s": 0}, "ttl_s"),
    ("tokens", "admin", {"ttl_s": BIG}, "ttl_s"),
    ("tokens", "admin", {"labels": {HUGE_KEY: "v"}}, "labels"),
    ("tokens", "admin", {"labels": {"site": True}}, "labels.site"),
    ("tokens", "admin", {"labels": {"site": {"a": 1}}}, "labels.site"),
    ("tokens", "admin", {"labels": {"site": "v" * 1000}}, "labels.site"),
    ("tokens", "admin", {"labels": ["site"]}, "labels"),
    ("tokens", "admin", {"parent": 5}, "parent"),
    ("tokens", "admin", {"parent": "p" * 200}, "parent"),
    ("tokens", "admin", {"tir": 1}, "tir"),
    ("tokens", "admin", [1, 2], "not a JSON object"),
    ("tokens", "admin", "{not json", "not JSON"),
    ("enroll", "none", {"agent_url": {"a": 1}}, "agent_url"),
    ("enroll", "none", {"agent_url": "javascript:alert(1)"}, "agent_url"),
    ("enroll", "none", {"agent_url": "file:///etc/passwd"}, "agent_url"),
    ("enroll", "none", {"agent_url": "http://" + "h" * 5000}, "agent_url"),
    ("enroll", "none", {"agent_url": 8000}, "agent_url"),
    ("enroll", "none", {"name": 5}, "name"),
    ("enroll", "none", {"name": "../etc"}, "name"),
    ("enroll", "none", {"name": None}, "name"),
    ("enroll", "none", {"capabilities": []}, "capabilities"),
    ("enroll", "none", {"capabilities": {"c" * 200: 1}}, "capabilities"),
    ("enroll", "none", {"enrollment_token": 5}, "enrollment_token"),
    ("report", "node", {"revision": True}, "revision"),
    ("report", "node", {"revision": BIG}, "revision"),
    ("report", "node", {"revision": 1.5}, "revision"),
    ("report", "node", {"revision": "7"}, "revision"),
    ("report", "node", {"revision": 1, "health": {"error_rate": "0"}}, "health.error_rate"),
    ("report", "node", {"revision": 1, "health": {"p99_ms": True}}, "health.p99_ms"),
    (
        "report",
        "node",
        {"revision": 1, "updater": {"failed_revision": True}},
        "updater.failed_revision",
    ),
    ("report", "node", {"revision": 1, "self_test": {"passed": "yes"}}, "self_test.passed"),
    ("report", "node", {"revision": 1, "active": {"sha256": 5}}, "active.sha256"),
    ("report", "node", {"revision": 1, "events": "lots"}, "events"),
    ("patch", "admin", {"tier": BIG}, "tier"),
    ("patch", "admin", {"tier": True}, "tier"),
    ("patch", "admin", {"labels": {HUGE_KEY: "v"}}, "labels"),
    ("patch", "admin", {"parent": {}}, "parent"),
    ("patch", "admin", {"name": "x"}, "name"),
    ("deploy", "admin", {**DEPLOY, "model": "lin:99999999999999999999"}, "model"),
    ("deploy", "admin", {**DEPLOY, "model": 1}, "model"),
    ("deploy", "admin", {**DEPLOY, "model": -BIG - 1}, "model"),
    ("deploy", "admin", {**DEPLOY, "plan": {"soak_s": 1e308}}, "plan.soak_s"),
    ("deploy", "admin", {**DEPLOY, "plan": {"soak_s": True}}, "plan.soak_s"),
    ("deploy", "admin", {**DEPLOY, "plan": {"watch_s": -1}}, "plan.watch_s"),
    ("deploy", "admin", {**DEPLOY, "plan": {"wave_timeout_s": "600"}}, "plan.wave_timeout_s"),
    ("deploy", "admin", {**DEPLOY, "plan": {"waves": "100%"}}, "plan.waves"),
    ("deploy", "admin", {**DEPLOY, "plan": {"waves": [100]}}, "plan.waves.0"),
    (
        "deploy",
        "admin",
        {**DEPLOY, "plan": {"guard": {"min_requests": True}}},
        "plan.guard.min_requests",
    ),
    (
        "deploy",
        "admin",
        {**DEPLOY, "plan": {"guard": {"require_self_test": "false"}}},
        "plan.guard.require_self_test",
    ),
    (
        "deploy",
        "admin",
        {**DEPLOY, "plan": {"guard": {"max_error_rate": 2}}},
        "plan.guard.max_error_rate",
    ),
    ("deploy", "admin", {**DEPLOY, "variants": {"x86_64-cpu": 5}}, "variants.x86_64-cpu"),
    ("deploy", "admin", {**DEPLOY, "selector": {"labels": {"site": []}}}, "selector.labels"),
    ("deploy", "admin", {**DEPLOY, "name": ""}, "name"),
    ("rollback", "admin", {"to": 5}, "to"),
    ("rollback", "admin", {"to": "lin:99999999999999999999"}, "to"),
]


@dataclass
class Plane:
    proc: ControlProcess
    home: Path
    node_id: str
    node_token: str

    def headers(self, who: str) -> dict[str, str]:
        token = {"admin": ADMIN, "node": self.node_token}.get(who)
        return {} if token is None else {"Authorization": f"Bearer {token}"}

    def state(self) -> dict[str, Any]:
        """What a refused request must not change: the nodes (labels, tier, report...), the
        rollouts, and every enrollment token (read from the database itself)."""
        admin = self.headers("admin")
        nodes = httpx.get(f"{self.proc.url}/api/v1/nodes", headers=admin).json()
        rollouts = httpx.get(f"{self.proc.url}/api/v1/rollouts", headers=admin).json()
        with sqlite3.connect(f"file:{self.home / 'registry.db'}?mode=ro", uri=True) as db:
            tokens = db.execute(
                "SELECT token_hash, labels, tier, parent, expires_at, used_at, node_id"
                " FROM control_enrollment_tokens ORDER BY created_at, token_hash"
            ).fetchall()
        return {"nodes": nodes, "rollouts": rollouts, "tokens": tokens}


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    home = tmp_path_factory.mktemp("schemas") / "home"
    with control_process(home, None, admin_token=ADMIN) as proc:
        admin = {"Authorization": f"Bearer {ADMIN}"}
        grant = httpx.post(f"{proc.url}/api/v1/enrollment-tokens", json={}, headers=admin)
        answer = enroll(proc.url, grant.json()["token"], "n1")
        plane = Plane(proc, home, answer["node_id"], answer["node_token"])
        report = f"{proc.url}/api/v1/nodes/{plane.node_id}/report"
        assert (
            httpx.post(report, json=GOOD_REPORT, headers=plane.headers("node")).status_code == 204
        )
        yield plane


def _request(plane: Plane, route: str, body: Any) -> httpx.Response:
    url = plane.proc.url
    paths = {
        "tokens": ("POST", "/api/v1/enrollment-tokens"),
        "enroll": ("POST", "/api/v1/enroll"),
        "report": ("POST", f"/api/v1/nodes/{plane.node_id}/report"),
        "patch": ("PATCH", f"/api/v1/nodes/{plane.node_id}"),
        "deploy": ("POST", "/api/v1/deployments"),
        "rollback": ("POST", "/api/v1/rollouts/r-1/rollback"),
    }
    method, path = paths[route]
    who = {"tokens": "admin", "enroll": "none", "report": "node"}.get(route, "admin")
    if route == "enroll" and isinstance(body, dict):
        # A valid, unused token: the refusal must come before it is spent.
        grant = httpx.post(
            f"{url}/api/v1/enrollment-tokens", json={}, headers=plane.headers("admin")
        )
        body = {"enrollment_token": grant.json()["token"], "name": "n2", **body}
    content = (
        body.encode() if isinstance(body, str) else httpx.Request("POST", url, json=body).content
    )
    headers = {**plane.headers(who), "Content-Type": "application/json"}
    return httpx.request(method, f"{url}{path}", content=content, headers=headers, timeout=30)


@pytest.mark.parametrize(("route", "who", "body", "field"), CASES)
def test_a_bad_field_is_400_naming_it_and_nothing_is_stored(
    plane: Plane, route: str, who: str, body: Any, field: str
) -> None:
    before = plane.state()
    response = _request(plane, route, body)
    after = plane.state()
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert field in error, error
    assert len(error) < 2000  # a 100 kB key is not echoed back
    assert "Traceback" not in response.text and ".db" not in error
    if route == "enroll" and isinstance(body, dict):  # the valid token made for the case
        made = set(after["tokens"]) - set(before["tokens"])
        assert len(made) == 1 and next(iter(made))[-2:] == (None, None), made  # not spent
        after["tokens"] = [t for t in after["tokens"] if t not in made]
    assert after == before


def test_a_database_failure_does_not_show_where_the_database_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The 503 the issue saw named the SQLite file; the operator's log still has it."""
    with control(tmp_path / "home") as ctl:
        where = ctl.plane.db.display_url

        def failing(*args: Any) -> Any:
            raise StoreError(f"enrolling node 'n' failed on database {where}: disk I/O error")

        monkeypatch.setattr(fleet, "enroll", failing)
        token = ctl.ok("POST", "/api/v1/enrollment-tokens", json={})["token"]
        body = {"enrollment_token": token, "name": "n"}
        response = ctl.request("POST", "/api/v1/enroll", json=body)
        assert response.status_code == 503
        assert where not in response.text and "registry.db" not in response.text
        assert "disk I/O error" in response.json()["error"]
