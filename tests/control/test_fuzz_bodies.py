"""No JSON body makes a control-plane route answer 5xx (issue 17: 500s and a 503 came from
bodies with the wrong types). Hypothesis sends arbitrary JSON, and mutations of valid bodies
with wrong types and extreme numbers, to every route that takes a JSON body, with the right
credential, through the app in-process."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.control.harness import Control, Node, control

EXTREMES = st.sampled_from(
    [True, False, None, 0, -1, 2**63, -(2**63) - 1, 10**30, 1e308, -1e308, 0.5, "", "x" * 300,
     "javascript:alert(1)", [], {}, {"a": {"b": []}}, "0001-01-01T00:00:00+01:00", "lin:0"]
)  # fmt: skip
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
VALID: dict[str, dict[str, Any]] = {
    "tokens": {"labels": {"site": "a"}, "tier": 1, "parent": "p", "ttl_s": 60},
    "report": {"revision": 0, "updater": {"state": "IDLE", "failed_revision": None},
               "active": None, "self_test": {"passed": True},
               "health": {"requests": 1, "errors": 0, "error_rate": 0.0, "p99_ms": 1.0}},
    "patch": {"labels": {"site": "b"}, "tier": 2, "parent": None},
    "deploy": {"name": "d", "model": "lin:1", "selector": {"labels": {"site": "zz"}},
               "plan": {"waves": ["1"], "soak_s": 1, "guard": {"min_requests": 0}}},
    "rollback": {"to": "lin:1"},
    "enroll": {"enrollment_token": "nope", "name": "n", "capabilities": {}, "agent_url": None},
    "telemetry": {"items": [{"id": "00000000-0000-0000-0000-000000000000", "kind": "metrics",
                             "created_at": "2026-11-22T03:04:05Z", "payload": {}}]},
}  # fmt: skip


def _mutated(valid: dict[str, Any]) -> st.SearchStrategy[Any]:
    """``valid`` with one field (maybe nested one level) replaced by an extreme or any JSON."""
    keys = sorted(valid)

    @st.composite
    def build(draw: st.DrawFn) -> Any:
        doc = json.loads(json.dumps(valid))
        key = draw(st.sampled_from(keys))
        value = draw(EXTREMES | JSON)
        inner = doc.get(key)
        if isinstance(inner, dict) and inner and draw(st.booleans()):
            inner[draw(st.sampled_from(sorted(inner)))] = value
        else:
            doc[key] = value
        return doc

    return build()


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with control(tmp_path_factory.mktemp("fuzz") / "home") as ctl:
        yield ctl, ctl.enroll("a", {"site": "a"})


def _call(ctl: Control, node: Node, route: str, body: Any) -> int:
    calls = {
        "tokens": ("POST", "/api/v1/enrollment-tokens", ctl.admin),
        "report": ("POST", f"/api/v1/nodes/{node.node_id}/report", node.auth),
        "patch": ("PATCH", f"/api/v1/nodes/{node.node_id}", ctl.admin),
        "deploy": ("POST", "/api/v1/deployments", ctl.admin),
        "rollback": ("POST", "/api/v1/rollouts/r-1/rollback", ctl.admin),
        "enroll": ("POST", "/api/v1/enroll", {}),
        "telemetry": ("POST", f"/api/v1/nodes/{node.node_id}/telemetry", node.auth),
    }
    method, url, headers = calls[route]
    content = json.dumps(body).encode()
    answer = ctl.request(method, url, content=content, headers=headers)
    assert answer.status_code < 500, (route, body, answer.text)
    return answer.status_code


@pytest.mark.parametrize("route", sorted(VALID))
def test_no_body_makes_a_route_answer_5xx(plane: Any, route: str) -> None:
    ctl, node = plane

    @settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(body=_mutated(VALID[route]) | JSON)
    def check(body: Any) -> None:
        _call(ctl, node, route, body)

    check()


QUERY = st.dictionaries(
    st.sampled_from(["node", "model", "version", "kind", "since", "until", "limit"]),
    EXTREMES.map(str) | st.text(max_size=40),
    max_size=4,
)


@settings(max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(params=QUERY, ident=st.text(max_size=30).map(lambda t: quote(t, safe="")))
def test_no_query_or_path_makes_a_read_answer_5xx(plane: Any, params: Any, ident: str) -> None:
    ctl, _ = plane
    for url, query in (("/api/v1/telemetry", params), (f"/api/v1/nodes/{ident}", None),
                       (f"/api/v1/rollouts/{ident}", None)):  # fmt: skip
        answer = ctl.request("GET", url, params=query, headers=ctl.admin)
        assert answer.status_code < 500, (url, query, answer.text)
