"""Alert rules: fire, de-duplicate and resolve on a fake clock (pure); stored by the control
tick; sent to a webhook (a local HTTP server) with retries, never holding up the tick loop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from tests.control.harness import control
from tests.control.test_monitoring import item, metrics

from edgeloop.control.alerting import Alerting, load_rules
from edgeloop.control.alerts import (
    AlertState,
    NodeSeen,
    Rule,
    RuleKind,
    evaluate,
    reconcile,
)
from edgeloop.control.loop import run_loop
from edgeloop.control.monitoring import FleetRow
from edgeloop.control.webhook import Webhook, WebhookConfig
from edgeloop.core.errors import ConfigError

DRIFT = Rule("drift-2", RuleKind.DRIFTING_NODES, k=2, window_s=600)
FLOOR = Rule("acc", RuleKind.ACCURACY_FLOOR, floor=0.8, window_s=600)
SILENT = Rule("silent", RuleKind.NODE_SILENT, silent_s=300)


def fleet_row(node: str, drifting: bool, at: float, estimated: float = 0.9) -> FleetRow:
    return FleetRow(node, "m", "1", drifting, {"estimated_accuracy": estimated}, None, at, None, at)


def ids() -> Any:
    counter = iter(range(1000))
    return lambda: f"a{next(counter)}"


def test_k_of_n_drifting_fires_once_then_resolves() -> None:
    new_id, now = ids(), 1000.0
    one = [fleet_row("n1", True, now), fleet_row("n2", False, now), fleet_row("n3", False, now)]
    assert evaluate([DRIFT], one, [], now) == []  # 1 of 3 drifting; k = 2
    two = [fleet_row("n1", True, now), fleet_row("n2", True, now), fleet_row("n3", False, now)]
    [finding] = evaluate([DRIFT], two, [], now)
    assert finding.subject == "m:1" and finding.figures["drifting"] == 2
    assert finding.figures["nodes"] == 3
    first = reconcile([], [finding], now, new_id)
    [alert] = first.opened
    assert alert.state is AlertState.FIRING and first.notices == (alert,)
    # Seen again ten seconds later: the same alert, kept, not news.
    again = reconcile([alert], evaluate([DRIFT], two, [], now + 10), now + 10, new_id)
    assert again.opened == () and again.notices == ()
    assert again.kept[0].alert_id == alert.alert_id and again.kept[0].last_seen == now + 10
    # Cleared: resolved, and news again.
    done = reconcile(again.kept, evaluate([DRIFT], one, [], now + 20), now + 20, new_id)
    [resolved] = done.resolved
    assert resolved.state is AlertState.RESOLVED and resolved.resolved_at == now + 20
    assert resolved.first_seen == now


def test_stale_rows_leave_the_window() -> None:
    now = 10_000.0
    rows = [fleet_row("n1", True, now - 700), fleet_row("n2", True, now)]
    assert evaluate([DRIFT], rows, [], now) == []


def test_accuracy_floor_fires_per_node() -> None:
    now = 1000.0
    rows = [fleet_row("n1", False, now, 0.7), fleet_row("n2", False, now, 0.95)]
    [finding] = evaluate([FLOOR], rows, [], now)
    assert finding.subject == "m:1@n1" and finding.figures == {"estimated_accuracy": 0.7,
                                                              "floor": 0.8}  # fmt: skip


def test_node_silent_counts_from_the_last_report_or_telemetry() -> None:
    now = 10_000.0
    nodes = [NodeSeen("quiet", 0.0, now - 301), NodeSeen("talks", 0.0, now - 400),
             NodeSeen("new", now - 10, None), NodeSeen("never", now - 1000, None)]  # fmt: skip
    rows = [fleet_row("talks", False, now - 5)]
    found = {f.subject: f for f in evaluate([SILENT], rows, nodes, now)}
    assert set(found) == {"quiet", "never"}
    assert found["quiet"].figures["silent_s"] == pytest.approx(301)


def test_rules_refuse_bad_values_naming_them(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="k 0"):
        Rule("r", RuleKind.DRIFTING_NODES, k=0)
    with pytest.raises(ConfigError, match="floor 1.5"):
        Rule("r", RuleKind.ACCURACY_FLOOR, floor=1.5)
    path = tmp_path / "rules.json"
    path.write_text(json.dumps({"rules": [{"name": "x", "kind": "sunspots"}]}))
    with pytest.raises(ConfigError, match="sunspots"):
        load_rules(path)
    path.write_text(json.dumps({"rules": [{"name": "x", "kind": "node_silent", "silent": 5}]}))
    with pytest.raises(ConfigError, match="silent"):
        load_rules(path)
    path.write_text(json.dumps({"rules": [{"name": "d", "kind": "drifting_nodes", "k": 3}]}))
    assert load_rules(path) == (Rule("d", RuleKind.DRIFTING_NODES, k=3),)


# --- a real receiver ---------------------------------------------------------------------------


class Receiver:
    """A local HTTP server that answers ``fail_first`` POSTs with 500, then 204."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.bodies: list[dict[str, Any]] = []
        self.attempts = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.attempts += 1
                if outer.attempts <= outer.fail_first:
                    self.send_response(500)
                else:
                    outer.bodies.append(json.loads(body))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"


@contextlib.contextmanager
def receiver(fail_first: int = 0) -> Iterator[Receiver]:
    r = Receiver(fail_first)
    thread = threading.Thread(target=r.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield r
    finally:
        r.server.shutdown()
        r.server.server_close()
        thread.join(5)


async def _run(plane: Any, alerting: Alerting, until: Any, limit_s: float = 10.0) -> None:
    sender = alerting.start()
    assert sender is not None
    tasks = [
        asyncio.create_task(sender.run()),
        asyncio.create_task(run_loop(plane, 0.05, alerting)),
    ]
    deadline = time.monotonic() + limit_s
    try:
        while not until() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def test_a_drifting_node_alert_reaches_the_webhook(tmp_path: Path) -> None:
    with control(tmp_path / "home") as ctl, receiver() as hook:
        node = ctl.enroll("a")
        url = f"/api/v1/nodes/{node.node_id}/telemetry"
        fresh = item("metrics", metrics(True), time.time())
        ctl.ok("POST", url, json={"items": [fresh]}, headers=node.auth)
        rule = Rule("drift-1", RuleKind.DRIFTING_NODES, k=1)
        alerting = Alerting((rule,), WebhookConfig(hook.url, timeout_s=2.0), every_s=0)
        asyncio.run(_run(ctl.plane, alerting, lambda: hook.bodies))
        [body] = hook.bodies
        assert body["alert"]["rule"] == "drift-1" and body["alert"]["state"] == "firing"
        assert body["alert"]["subject"] == "digits:2" and body["alert"]["figures"]["drifting"] == 1
        [stored] = ctl.ok("GET", "/api/v1/alerts?state=firing")["alerts"]
        assert stored["id"] == body["alert"]["id"]
        gauges = ctl.request("GET", "/metrics", headers=ctl.admin).text
        assert 'edgeloop_fleet_alerts_firing{rule="drift-1"} 1.0' in gauges


def test_a_failing_receiver_is_retried_and_the_tick_loop_keeps_running(tmp_path: Path) -> None:
    with control(tmp_path / "home") as ctl, receiver(fail_first=3) as hook:
        ctl.enroll("a")  # enrolled "long ago" by the rule's measure: silent at once
        rule = Rule("silent", RuleKind.NODE_SILENT, silent_s=1)
        config = WebhookConfig(hook.url, timeout_s=2.0, attempts=5, backoff_s=0.2)
        alerting = Alerting((rule,), config, every_s=0)
        time.sleep(1.1)
        asyncio.run(_run(ctl.plane, alerting, lambda: hook.bodies))
        assert hook.attempts == 4 and len(hook.bodies) == 1
        assert alerting.sender is not None and alerting.sender.counts["retried"] == 3
        # Backoffs of 0.2 + 0.4 + 0.8 s: the 50 ms tick ran many times meanwhile.
        assert alerting.evaluations >= 10


def test_a_full_queue_drops_and_counts_without_blocking() -> None:
    async def go() -> Webhook:
        hook = Webhook(WebhookConfig("http://127.0.0.1:9/x", queue=2))
        started = time.perf_counter()
        results = [hook.offer({"n": i}) for i in range(5)]
        assert time.perf_counter() - started < 0.05
        assert results == [True, True, False, False, False]
        return hook

    assert asyncio.run(go()).counts["dropped"] == 3


def test_webhook_config_refuses_a_non_http_url() -> None:
    with pytest.raises(ConfigError, match="ftp://x"):
        WebhookConfig("ftp://x")


def test_a_twin_alert_of_two_replicas_is_resolved_by_the_next_evaluation() -> None:
    now, new_id = 1000.0, ids()
    two = [fleet_row("n1", True, now), fleet_row("n2", True, now)]
    [finding] = evaluate([DRIFT], two, [], now)
    [a] = reconcile([], [finding], now, new_id).opened
    [b] = reconcile([], [finding], now, new_id).opened  # the other replica, same instant
    changes = reconcile([a, b], [finding], now + 1, new_id)
    assert [k.alert_id for k in changes.kept] == [a.alert_id]
    assert [r.alert_id for r in changes.resolved] == [b.alert_id]
