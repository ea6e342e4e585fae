"""The health guard and traffic (issue 18 item 6): a window with no request is "not judged",
never "healthy with error rate None"; ``required_requests`` makes such a node wait. And a node
whose server does not serve its active model fails the guard (issue 17 item 1)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from edgeloop.control.deployments import Guard
from edgeloop.control.guard import Verdict, check_node
from edgeloop.control.schemas import GuardBody
from edgeloop.core.errors import ConfigError

SHA = "c" * 64


def _report(health: Any, **active: Any) -> dict[str, Any]:
    return {
        "revision": 4,
        "updater": {"state": "IDLE", "error": None, "failed_revision": None},
        "active": {"sha256": SHA, **active},
        "self_test": {"passed": True},
        "health": health,
    }


NO_TRAFFIC = {"window_s": 30.0, "requests": 0, "errors": 0, "error_rate": None, "p99_ms": None}


@pytest.mark.parametrize("health", [NO_TRAFFIC, None, {}])
def test_a_window_without_traffic_is_not_judged_and_says_so(health: Any) -> None:
    check = check_node(_report(health), 4, SHA, Guard(max_error_rate=0.05))
    assert check.verdict is Verdict.HEALTHY
    assert "not judged" in check.detail
    assert "None" not in check.detail


def test_a_judged_window_names_its_request_count() -> None:
    health = {"requests": 40, "errors": 0, "error_rate": 0.0, "p99_ms": 3.5}
    check = check_node(_report(health), 4, SHA, Guard(max_error_rate=0.05))
    assert check.verdict is Verdict.HEALTHY
    assert check.detail == "40 requests: error rate 0.0, p99 3.5 ms"


def test_too_few_requests_for_min_requests_are_not_judged() -> None:
    health = {"requests": 3, "errors": 3, "error_rate": 1.0, "p99_ms": 1.0}
    check = check_node(_report(health), 4, SHA, Guard(max_error_rate=0.05, min_requests=10))
    assert check.verdict is Verdict.HEALTHY
    assert check.detail == "3 requests < min_requests 10: not judged"


@pytest.mark.parametrize(
    ("health", "seen"),
    [(NO_TRAFFIC, "0 requests"), (None, "no requests"), ({"requests": 4}, "4 requests")],
)
def test_required_requests_make_a_quiet_node_wait(health: Any, seen: str) -> None:
    check = check_node(_report(health), 4, SHA, Guard(required_requests=5))
    assert check.verdict is Verdict.WAITING
    assert check.detail == f"{seen} in the window; required_requests 5"


def test_required_requests_met_the_node_is_judged() -> None:
    health = {"requests": 5, "errors": 1, "error_rate": 0.2, "p99_ms": 2.0}
    check = check_node(_report(health), 4, SHA, Guard(required_requests=5, max_error_rate=0.1))
    assert check.verdict is Verdict.FAILED
    assert "error rate 0.2000 > max_error_rate 0.1" in check.detail


def test_the_default_guard_requires_no_traffic() -> None:
    assert Guard().required_requests == 0
    assert Guard.from_dict({}).required_requests == 0


def test_a_node_whose_server_does_not_serve_the_model_fails() -> None:
    report = _report(NO_TRAFFIC, serving=False, serving_state="model 'linear' is not loaded")
    check = check_node(report, 4, SHA, Guard())
    assert check.verdict is Verdict.FAILED
    assert "its server does not serve it: model 'linear' is not loaded" in check.detail


def test_a_node_serving_its_model_or_an_older_agent_is_judged_as_before() -> None:
    for active in ({"serving": True, "serving_state": "ready"}, {}):
        check = check_node(_report(NO_TRAFFIC, **active), 4, SHA, Guard())
        assert check.verdict is Verdict.HEALTHY


def test_required_requests_travel_in_the_plan() -> None:
    guard = Guard.from_dict({"max_error_rate": 0.05, "required_requests": 20})
    assert guard.required_requests == 20
    assert Guard.from_dict(guard.to_dict()) == guard
    assert Guard.from_dict({}).required_requests == 0


@pytest.mark.parametrize("bad", [-1, True, 1.5, "20"])
def test_a_bad_required_requests_is_refused_naming_it(bad: Any) -> None:
    with pytest.raises(ConfigError, match="required_requests"):
        Guard.from_dict({"required_requests": bad})


def test_the_api_schema_takes_required_requests_and_refuses_a_boolean() -> None:
    assert GuardBody.model_validate_json('{"required_requests": 20}').required_requests == 20
    with pytest.raises(ValidationError):
        GuardBody.model_validate_json('{"required_requests": true}')
