"""Attacks on a node's own server (issue 17 items 1 and 2), against ``edgeloop agent`` as a real
OS process: each test is named for what it stops and asserts the node still serves its model
and reports the truth about it afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
from tests.agent.agent_process import AgentProcess, idle_on
from tests.agent.conftest import Node
from tests.agent.fleet_stub import ENROLL_TOKEN, ControlStub, publish
from tests.agent.test_agent_process import ROW, _wait_until, served_version
from tests.serving.slow_clients import attack

from edgeloop.agent.activator import CatalogActivator, serving_state
from edgeloop.agent.reconcile import AgentOptions, Reconciler
from edgeloop.agent.slots import SlotModel
from edgeloop.control.deployments import Guard
from edgeloop.control.guard import Verdict, check_node
from edgeloop.core.errors import EdgeError
from edgeloop.serving.catalog import Catalog
from edgeloop.serving.config import ServerConfig
from edgeloop.serving.connections import ConnectionLimits
from edgeloop.serving.repository import Origin

STATE_CHANGES = [
    ("POST", "/v2/repository/models/linear/unload", None),
    ("POST", "/v2/repository/models/linear/load", None),
    ("PUT", "/v2/models/linear/power-budget", {"watts": 0.5}),
]
BAD_SHAPE = {
    "inputs": [{"name": "input", "shape": [9223372036854775807, 0], "datatype": "FP32", "data": []}]
}


def _committed_v1(tmp_path: Path, stub: ControlStub, models: dict[int, Path]) -> AgentProcess:
    publish(stub.repo, models[1], 1, version=1)
    stub.set_desired(1)
    agent = AgentProcess(tmp_path / "node", stub.url, enroll_token=ENROLL_TOKEN)
    agent.wait_for(idle_on(1), what="revision 1 committed")
    return agent


def test_unauthenticated_unload_load_and_power_budget_are_refused(
    tmp_path: Path, stub: ControlStub, models: dict[int, Path]
) -> None:
    agent = _committed_v1(tmp_path, stub, models)
    try:
        for headers in ({}, {"Authorization": "Bearer " + "x" * 32}):
            for method, path, body in STATE_CHANGES:
                r = agent.http.request(method, path, json=body, headers=headers)
                assert r.status_code == 403, (method, path, r.text)
                assert r.json()["type"] == "ForbiddenError"
                assert "control plane's desired state" in r.json()["error"]
        assert "model_repository" not in agent.http.get("/v2").json()["extensions"]
        doc = agent.http.get("/openapi.json")  # open: the node's server has no credential
        assert doc.status_code == 200 and "/agent/status" in doc.json()["paths"]
        unload = doc.json()["paths"]["/v2/repository/models/{model}/unload"]["post"]
        assert "200" not in unload["responses"] and "403" in unload["responses"]
        assert served_version(agent, models) == 1  # still serving, every request answered
        status = agent.status()
        assert status["active"]["version"] == 1
        assert status["active"]["serving"] is True and status["active"]["serving_state"] == "ready"
        report = agent.wait_for(lambda s: stub.last_report(), what="a report")
        assert report["active"]["serving"] is True
    finally:
        agent.stop()


def test_malformed_shapes_in_the_watch_window_do_not_roll_back_a_good_version(
    tmp_path: Path, stub: ControlStub, models: dict[int, Path]
) -> None:
    """Client mistakes (4xx) are not the model's failure: a flood of them while version 2 is
    watched, under a guard of 5 % errors, must not roll it back (they were 500s before)."""
    agent = _committed_v1(tmp_path, stub, models)
    stop = threading.Event()
    codes: list[int] = []

    def flood() -> None:
        with httpx.Client(base_url=agent.url, timeout=10) as client:
            while not stop.is_set():
                codes.append(client.post("/v2/models/linear/infer", json=BAD_SHAPE).status_code)
                codes.append(client.post("/predict", json={"features": ROW}).status_code)

    worker = threading.Thread(target=flood, daemon=True)
    try:
        worker.start()
        _wait_until(lambda: len(codes) >= 10, "the flood before the update")
        publish(stub.repo, models[2], 2, version=2, watch_s=1.5,
                guard={"max_error_rate": 0.05, "min_requests": 1})  # fmt: skip
        stub.set_desired(2)
        status = agent.wait_for(idle_on(2), what="revision 2 acted on")
        stop.set()
        worker.join(timeout=15)
        assert status["updater"]["outcome"] == "committed", status["updater"]
        assert status["active"]["version"] == 2 and status["active"]["serving"] is True
        assert served_version(agent, models) == 2
        assert set(codes) == {200, 400}, set(codes)
        figures = status["health"]
        assert figures["requests"] > 0 and figures["errors"] == 0
    finally:
        stop.set()
        agent.stop()


def _offline(node: Node) -> tuple[SlotModel, Reconciler]:
    """The node's active model, and a reconcile loop for it that reaches no control plane."""
    active = node.active()
    assert active is not None
    nowhere = "http://127.0.0.1:9"
    options = AgentOptions(nowhere, None, "n", None)
    return active, Reconciler(node.home, node.updater, options, None, nowhere)


def test_the_report_says_not_serving_when_the_server_does_not_serve_the_model(
    node_on_v1: Node,
) -> None:
    """The status comes from the server's catalog, not from the slot pointer, and the control
    plane's guard fails a node whose server does not serve its model."""
    active, reconciler = _offline(node_on_v1)
    later = replace(active, version=2)

    async def run() -> list[dict[str, Any]]:
        catalog = Catalog([Origin(active.name, active.folder)], ServerConfig())
        reconciler.serving = lambda model: serving_state(catalog, model)
        reports = [reconciler.report_body()]  # not started: nothing loaded yet
        await catalog.start()
        reports.append(reconciler.report_body())
        states = [serving_state(catalog, later)]
        await catalog.unload(active.name)
        reports.append(reconciler.report_body())
        await catalog.remove(active.name)
        reports.append(reconciler.report_body())
        await catalog.stop()
        reports.append(reconciler.report_body())
        return [r["active"] for r in reports] + states

    *actives, other = asyncio.run(run())
    assert [a["serving"] for a in actives] == [False, True, False, False, False]
    assert [a["serving_state"] for a in actives] == [
        "version 1 not loaded; no version is loaded",
        "ready",
        "version 1 not loaded; no version is loaded",
        "model 'linear' is not loaded",
        "the server is stopping",
    ]
    assert other == {
        "serving": False,
        "serving_state": "version 2 not loaded; version 1 serves instead",
    }
    report = reconciler.report_body()
    assert report["updater"]["outcome"] == "committed"  # what happened, not what serves
    check = check_node(report, 1, active.sha256, Guard())
    assert check.verdict is Verdict.FAILED and "its server does not serve it" in check.detail


def test_slowloris_and_silent_sockets_are_cut_off_while_the_node_serves(
    tmp_path: Path, stub: ControlStub, models: dict[int, Path]
) -> None:
    """Issue 17 item 6 on the agent's own server, with its default bounds (10 s to send the
    headers, serving/connections.py): sockets that send nothing or a header byte at a time are
    closed with 408 within the bound; requests meanwhile are answered."""
    bound = ConnectionLimits().header_timeout_s
    agent = _committed_v1(tmp_path, stub, models)
    try:
        held, join = attack(agent.url, {"silent": 3, "slowloris": 3}, 0.5, bound + 30)
        for _ in range(20):
            assert agent.predict(ROW).status_code == 200
        join()
        for h in held:
            assert h.open_s is not None and bound <= h.open_s + 0.1 <= bound + 4.0, h
            assert h.status == "HTTP/1.1 408 Request Timeout", h
        assert served_version(agent, models) == 1
    finally:
        agent.stop()


def test_a_model_the_server_lost_is_served_again_by_the_next_pass(node_on_v1: Node) -> None:
    """Nothing outside the updater can unload the model now; should the server lose it anyway
    (a bug, a failed load), the reconcile loop serves the active slot again, offline too."""
    active, reconciler = _offline(node_on_v1)

    async def run() -> list[Any]:
        catalog = Catalog([Origin(active.name, active.folder)], ServerConfig())
        activator = CatalogActivator(catalog, ServerConfig())
        reconciler.serving = lambda model: serving_state(catalog, model)
        reconciler.repair = activator.repair
        await catalog.start()
        seen: list[Any] = [await activator.repair(active)]  # serving: nothing to do
        await catalog.remove(active.name)
        seen.append(reconciler.report_body()["active"]["serving"])
        with contextlib.suppress(EdgeError):
            await reconciler.tick()  # enrolling fails (no token): the repair came first
        seen += [reconciler.repairs, reconciler.report_body()["active"]["serving"]]
        await catalog.stop()
        seen.append(await activator.repair(active))  # never while the server stops
        return seen

    assert asyncio.run(run()) == [False, False, 1, True, False]
