"""The health guard: what one node's report says about the revision it was given. Pure.

A node is judged on facts it reported: the revision it acted on, the sha256 of the model it
serves (and whether its server really answers with it), its self-test, and the health figures
its own server measured over its window. Those figures count answers >= 500 as errors: a 4xx
is the client's mistake, not the model's (docs/agent.md). A window without traffic is not
judged, and the verdict says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from edgeloop.control.deployments import Guard


class Verdict(StrEnum):
    WAITING = "waiting"  # has not acted on the revision yet
    HEALTHY = "healthy"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class NodeCheck:
    verdict: Verdict
    detail: str


def _number(doc: Mapping[str, Any], key: str) -> float | None:
    value = doc.get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def check_node(
    report: Mapping[str, Any] | None, revision: int, sha256: str, guard: Guard
) -> NodeCheck:
    """Judge ``report`` against the node's desired ``revision`` serving ``sha256``."""
    if report is None:
        return NodeCheck(Verdict.WAITING, "no report yet")
    updater = report.get("updater") or {}
    failed = updater.get("failed_revision") if isinstance(updater, Mapping) else None
    error = updater.get("error") if isinstance(updater, Mapping) else None
    if isinstance(failed, int) and failed >= revision:
        return NodeCheck(Verdict.FAILED, f"the agent rolled back revision {failed}: {error}")
    acted = report.get("revision")
    if not isinstance(acted, int) or acted < revision:
        return NodeCheck(Verdict.WAITING, f"acted on revision {acted}, waiting for {revision}")
    active = report.get("active") or {}
    serving = active.get("sha256") if isinstance(active, Mapping) else None
    if serving != sha256:
        return NodeCheck(
            Verdict.FAILED,
            f"acted on revision {acted} but serves {serving or 'nothing'} instead of the new "
            f"model (updater error: {error})",
        )
    if isinstance(active, Mapping) and active.get("serving") is False:
        # The slot names the model, but the node's own server does not answer with it (an
        # agent reports this from its server's catalog, issue 17 item 1).
        return NodeCheck(
            Verdict.FAILED,
            f"acted on revision {acted} and holds the new model, but its server does not serve "
            f"it: {active.get('serving_state') or 'not serving'}",
        )
    test = report.get("self_test") or {}
    if guard.require_self_test and not (isinstance(test, Mapping) and test.get("passed") is True):
        return NodeCheck(Verdict.FAILED, f"self-test did not pass: {test or 'none reported'}")
    return _health(report.get("health") or {}, guard)


def _health(health: Any, guard: Guard) -> NodeCheck:
    """Judge the node's health figures. A window with no request (or fewer than
    ``min_requests``) is not judged: healthy, and said so. With ``required_requests`` such a
    node is WAITING instead (the wave converges only once every node saw that much traffic,
    or ``wave_timeout_s`` halts it)."""
    figures = health if isinstance(health, Mapping) else {}
    requests = _number(figures, "requests")
    required = guard.required_requests
    if required and (requests is None or requests < required):
        seen = "no" if requests is None else f"{requests:.0f}"
        return NodeCheck(
            Verdict.WAITING, f"{seen} requests in the window; required_requests {required}"
        )
    if not isinstance(health, Mapping):
        return NodeCheck(Verdict.HEALTHY, "no health figures reported: not judged")
    if not requests:
        return NodeCheck(Verdict.HEALTHY, "no traffic: not judged")
    if requests < guard.min_requests:
        return NodeCheck(
            Verdict.HEALTHY,
            f"{requests:.0f} requests < min_requests {guard.min_requests}: not judged",
        )
    rate, p99 = _number(health, "error_rate"), _number(health, "p99_ms")
    if guard.max_error_rate is not None and rate is not None and rate > guard.max_error_rate:
        return NodeCheck(
            Verdict.FAILED, f"error rate {rate:.4f} > max_error_rate {guard.max_error_rate}"
        )
    if guard.max_p99_ms is not None and p99 is not None and p99 > guard.max_p99_ms:
        return NodeCheck(Verdict.FAILED, f"p99 {p99:.1f} ms > max_p99_ms {guard.max_p99_ms}")
    return NodeCheck(Verdict.HEALTHY, f"{requests:.0f} requests: error rate {rate}, p99 {p99} ms")
