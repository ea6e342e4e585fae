"""Every endpoint refuses a missing credential (401), a wrong one (401), and one node acting as
another or as the admin (403); enrollment tokens are single-use and expire."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from tests.control.harness import Control, Node, control
from tests.tiny_models import make_linear_onnx

ADMIN_CALLS = [
    ("POST", "/api/v1/enrollment-tokens", {"labels": {}}),
    ("GET", "/api/v1/nodes", None),
    ("GET", "/api/v1/nodes/{a}", None),
    ("PATCH", "/api/v1/nodes/{a}", {"labels": {"x": "1"}}),
    ("GET", "/api/v1/models", None),
    ("POST", "/api/v1/models", None),
    ("POST", "/api/v1/deployments", {"name": "d", "model": "lin:1"}),
    ("GET", "/api/v1/rollouts", None),
    ("GET", "/api/v1/rollouts/{r}", None),
    ("POST", "/api/v1/rollouts/{r}/rollback", {}),
    ("POST", "/api/v1/rollouts/{r}/pause", None),
    ("POST", "/api/v1/rollouts/{r}/resume", None),
    ("GET", "/api/v1/telemetry", None),
    ("GET", "/api/v1/openapi.json", None),
]
NODE_CALLS = [
    ("GET", "/api/v1/nodes/{a}/desired", None),
    ("POST", "/api/v1/nodes/{a}/report", {"revision": 0}),
    ("GET", "/tuf/targets/{doc_a}", None),
    ("POST", "/api/v1/nodes/{a}/telemetry", {"items": []}),
]


@pytest.fixture
def fleet(tmp_path: Path) -> tuple[Control, Node, Node, str]:
    with control(tmp_path / "home") as ctl:
        ctl.publish(make_linear_onnx(tmp_path / "a.onnx"), "lin")
        a, b = ctl.enroll("a"), ctl.enroll("b")
        spec = {"name": "d", "model": "lin:1", "plan": {"waves": ["100%"], "soak_s": 3600}}
        rollout = ctl.ok("POST", "/api/v1/deployments", json=spec)
        yield ctl, a, b, rollout["rollout_id"]


def _url(template: str, ctl: Control, a: Node, rid: str) -> str:
    sha = ctl.plane.repo.targets()[f"deployments/{a.node_id}.json"].hashes["sha256"]
    doc_a = f"deployments/{sha}.{a.node_id}.json"
    return template.format(a=a.node_id, r=rid, doc_a=doc_a)


def _call(ctl: Control, method: str, url: str, body: object, headers: dict[str, str]) -> int:
    return ctl.request(method, url, json=body, headers=headers).status_code


@pytest.mark.parametrize(("method", "template", "body"), ADMIN_CALLS + NODE_CALLS)
def test_missing_and_wrong_credentials_are_401(
    fleet: tuple[Control, Node, Node, str], method: str, template: str, body: object
) -> None:
    ctl, a, _, rid = fleet
    url = _url(template, ctl, a, rid)
    missing = ctl.request(method, url, json=body)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert missing.json()["type"] == "UnauthorizedError"
    wrong = {"Authorization": "Bearer " + "x" * 43}
    assert _call(ctl, method, url, body, wrong) == 401
    assert _call(ctl, method, url, body, {"Authorization": "Basic abc"}) == 401


@pytest.mark.parametrize(("method", "template", "body"), ADMIN_CALLS)
def test_a_node_token_on_an_admin_call_is_403(
    fleet: tuple[Control, Node, Node, str], method: str, template: str, body: object
) -> None:
    ctl, a, b, rid = fleet
    response = ctl.request(method, _url(template, ctl, a, rid), json=body, headers=b.auth)
    assert response.status_code == 403
    assert response.json()["type"] == "ForbiddenError"


@pytest.mark.parametrize(("method", "template", "body"), NODE_CALLS)
def test_one_node_acting_as_another_is_403(
    fleet: tuple[Control, Node, Node, str], method: str, template: str, body: object
) -> None:
    ctl, a, b, rid = fleet
    url = _url(template, ctl, a, rid)
    response = ctl.request(method, url, json=body, headers=b.auth)
    assert response.status_code == 403
    assert f"may not act as node {a.node_id}" in response.json()["error"]
    assert _call(ctl, method, url, body, a.auth) in (200, 204)  # its owner may


def test_admin_token_cannot_write_a_node_report(fleet: tuple[Control, Node, Node, str]) -> None:
    ctl, a, _, _ = fleet
    url = f"/api/v1/nodes/{a.node_id}/report"
    assert _call(ctl, "POST", url, {"revision": 0}, ctl.admin) == 403
    assert ctl.plane.node(a.node_id)["reported"] is None


def test_enrollment_token_is_single_use(tmp_path: Path) -> None:
    with control(tmp_path / "home") as ctl:
        token = ctl.ok("POST", "/api/v1/enrollment-tokens", json={"labels": {"site": "a"}})
        body = {"enrollment_token": token["token"], "name": "n", "capabilities": {}}
        first = ctl.request("POST", "/api/v1/enroll", json=body)
        assert first.status_code == 201
        again = ctl.request("POST", "/api/v1/enroll", json=body)
        assert again.status_code == 401
        assert "already used" in again.json()["error"]
        assert len(ctl.plane.nodes()) == 1
        assert ctl.plane.nodes()[0]["labels"] == {"site": "a"}


def test_enrollment_token_expires(tmp_path: Path) -> None:
    with control(tmp_path / "home") as ctl:
        token = ctl.ok("POST", "/api/v1/enrollment-tokens", json={"ttl_s": 1})
        time.sleep(1.2)
        body = {"enrollment_token": token["token"], "name": "n", "capabilities": {}}
        late = ctl.request("POST", "/api/v1/enroll", json=body)
        assert late.status_code == 401
        assert "expired" in late.json()["error"]
        assert ctl.plane.nodes() == []


def test_enroll_without_or_with_a_wrong_token_is_401(tmp_path: Path) -> None:
    with control(tmp_path / "home") as ctl:
        for body in ({"name": "n"}, {"enrollment_token": "nope", "name": "n"}):
            response = ctl.request("POST", "/api/v1/enroll", json=body)
            assert response.status_code == 401
            assert response.headers["www-authenticate"] == "Bearer"
        assert ctl.plane.nodes() == []


def test_tokens_are_stored_hashed_and_the_admin_file_is_private(tmp_path: Path) -> None:
    with control(tmp_path / "home") as ctl:
        node = ctl.enroll("n")
        raw = (tmp_path / "home" / "registry.db").read_bytes()
        assert node.token.encode() not in raw and ctl.admin_token.encode() not in raw
        token_file = tmp_path / "home" / "control" / "admin.token"
        assert token_file.read_text().strip() == ctl.admin_token
        assert token_file.stat().st_mode & 0o077 == 0


def test_enroll_answer_carries_the_tuf_root(tmp_path: Path) -> None:
    with control(tmp_path / "home") as ctl:
        node = ctl.enroll("n")
        tuf = node.answer["tuf"]
        assert tuf["metadata_url"] == "http://ctl/tuf/metadata/"
        assert tuf["targets_url"] == "http://ctl/tuf/targets/"
        assert tuf["root"]["signed"]["_type"] == "root"
        assert tuf["root"]["signed"]["consistent_snapshot"] is True
        caps = ctl.ok("GET", f"/api/v1/nodes/{node.node_id}")
        assert caps["device_class"] == "x86_64-cpu"
