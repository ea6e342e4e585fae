"""Drift alarms on the node become ``event`` items in the agent's durable outbox.

In-process: the agent's :class:`Telemetry` as the catalog's monitor sink, the real outbox file.
As a process: ``edgeloop agent`` serving a committed slot with a reference profile placed beside
the slot's model file (where the control plane's profile artifact will go), a shifted stream
sent over HTTP, the alarm read back from ``/agent/status`` and from the outbox on disk.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from tests.agent.agent_process import AgentProcess
from tests.agent.fleet_stub import ControlStub, new_repository
from tests.agent.kill_cycle import enrolled_on_v1
from tests.agent.test_routes import PrivateBroker, _until
from tests.serving.harness import serving
from tests.tiny_models import make_linear_onnx

from edgeloop.agent.health import HealthRecorder
from edgeloop.agent.outbox import ItemKind, Outbox
from edgeloop.agent.route_host import service_infer
from edgeloop.agent.route_spec import parse_routes
from edgeloop.agent.routes import BrokerConfig, RouteRunner
from edgeloop.agent.telemetry import Telemetry, outbox_path
from edgeloop.agent.updater import Updater
from edgeloop.monitoring import DriftMonitor
from edgeloop.serving.feedback import monitoring_status

FEATURES = 4


def _profile(model: Path) -> bytes:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((600, FEATURES)).astype(np.float32)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    probs = np.asarray(session.run(None, {"input": x})[0])
    return DriftMonitor.fit(x, probs, probs.argmax(axis=1)).profile.to_bytes()


def _shifted(n: int, seed: int = 1) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, FEATURES))
    x[:, 2] += 3.0
    return x


async def _no_app(scope: Any, receive: Any, send: Any) -> None:
    """An ASGI app for a recorder that records nothing here."""


def _events(outbox: Outbox) -> list[dict[str, Any]]:
    items = outbox.batch(max_items=10_000, max_bytes=1 << 30)
    return [json.loads(i.payload) for i in items if i.kind is ItemKind.EVENT]


def test_an_alarm_becomes_an_outbox_event(tmp_path: Path) -> None:
    model = make_linear_onnx(tmp_path / "lin.onnx", features=FEATURES)
    (tmp_path / "lin.profile.npz").write_bytes(_profile(model))
    outbox = Outbox.open(tmp_path / "outbox.sqlite")
    tel = Telemetry(outbox, metrics_every_s=60.0, sample_rate=0.0, source="node-7")
    with serving([model]) as h:
        h.catalog.monitor_sinks.append(tel.monitor_event)
        for row in _shifted(200):
            assert h.post("/predict", json={"features": row.tolist()}).status_code == 200
        h.call(tel.flush)
        status = monitoring_status(h.catalog)
        tel.monitoring = lambda: monitoring_status(h.catalog)
        snapshot = tel.snapshot(HealthRecorder(_no_app), since=0.0)
    drift = [e for e in _events(outbox) if e.get("type") == "drift"]
    outbox.close()
    assert drift, "no drift event in the outbox"
    event = drift[0]
    assert (event["model"], event["model_version"], event["kind"]) == ("lin", "1", "input")
    assert event["score"] > event["threshold"] > 0
    assert event["top_features"][0]["feature"] == 2
    assert event["source"] == "node-7" and event["at"].endswith("+00:00")
    assert 0 <= event["sample_index"] < 200
    assert tel.puts["event"] == len(drift)
    assert status["lin"]["drifting"] is True and status["lin"]["alarms"]["input"] >= 1
    watched = snapshot["monitoring"]["lin"]  # what each metrics item carries
    assert watched["drifting"] is True and watched["samples_seen"] == 200
    assert watched["quality"]["nonfinite_samples"] == 0


def test_the_agent_process_monitors_a_slot_with_a_profile(tmp_path: Path) -> None:
    v1 = make_linear_onnx(tmp_path / "v1.onnx", features=FEATURES, seed=1)
    with ControlStub(new_repository(tmp_path / "repo")) as stub:
        home = enrolled_on_v1(tmp_path / "node", stub, v1)
        slots = Updater(home).slots
        active = slots.read(slots.active_name())
        assert active is not None
        active.file.with_name("model.profile.npz").write_bytes(_profile(v1))
        agent = AgentProcess(home.root.parent, stub.url)
        try:
            for row in _shifted(200, seed=3):
                assert agent.predict(row.tolist()).status_code == 200

            def alarmed(status: dict[str, Any]) -> dict[str, Any] | None:
                puts = status["telemetry"]["puts"].get("event", 0)
                return status if puts and status["monitoring"] else None

            status = agent.wait_for(alarmed, what="a monitor event put")
        finally:
            agent.stop()
    watched = status["monitoring"][active.name]
    assert watched["state"] == "active" and watched["alarms"]["input"] >= 1
    assert watched["last_alarm"]["kind"] in ("input", "prediction", "confidence")
    with Outbox.open(outbox_path(home)) as outbox:
        drift = [e for e in _events(outbox) if e.get("type") == "drift"]
    inputs = [e for e in drift if e["kind"] == "input"]
    assert inputs and inputs[0]["model"] == active.name
    assert inputs[0]["model_version"] == str(active.version)
    assert inputs[0]["top_features"][0]["feature"] == 2


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[PrivateBroker]:
    """A Mosquitto of this test's own (skipped when the binary is not installed)."""
    folder = tmp_path / "broker"
    folder.mkdir()
    running = PrivateBroker(folder)
    try:
        running.start()
        yield running
    finally:
        running.close()


def test_mqtt_route_answers_are_labelled_over_mqtt(tmp_path: Path, broker: PrivateBroker) -> None:
    """A routed message's id joins its answer to a label published on ``<prefix>/labels``."""
    import aiomqtt

    model = make_linear_onnx(tmp_path / "lin.onnx", features=FEATURES)
    (tmp_path / "lin.profile.npz").write_bytes(_profile(model))
    port = broker.port
    routes = parse_routes(["s: FROM in/+ INTO lin THEN out/{topic[1]}"])
    cfg = BrokerConfig(port=port, deadletter_prefix="dl", reconnect_initial_s=0.05)
    row = [0.3, -0.2, 0.1, 0.5]
    with serving([model]) as h:
        feedback = h.server.feedback
        runner = RouteRunner(
            routes, service_infer(h.server.service), cfg,
            labels=lambda body: feedback.apply(None, body, "lin"),
        )  # fmt: skip

        async def scenario() -> None:
            stop = asyncio.Event()
            run = asyncio.create_task(runner.run(stop))
            await asyncio.wait_for(runner.connected.wait(), 60)
            async with aiomqtt.Client("127.0.0.1", port) as pub:
                await pub.publish("in/d1", json.dumps({"features": row, "id": "m-1"}), qos=1)
                await _until(lambda: runner.counters["s"].published == 1)
                served = h.server.service.joins.peek("lin", "m-1")
                assert served is not None
                good = {"model": "lin", "request_id": "m-1", "label": served.predicted[0]}
                await pub.publish("dl/labels", json.dumps(good), qos=1)
                await pub.publish("dl/labels", json.dumps({**good, "label": 9}), qos=1)
                await pub.publish("dl/labels", b"{broken", qos=1)
                await _until(lambda: sum(runner.label_counts.values()) == 3)
            stop.set()
            await run

        h.call(scenario)
        view = h.get("/v2/models/lin/monitor").json()
    assert runner.label_counts == {"applied": 1, "unknown": 1, "refused": 1}
    assert runner.last_label_error is not None and "not valid JSON" in runner.last_label_error
    assert view["performance"]["labelled"] == 1 and view["performance"]["accuracy"] == 1.0
    assert view["samples_seen"] == 1
