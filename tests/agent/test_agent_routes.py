"""``edgeloop agent --route ... --mqtt ...`` as a real process against the Mosquitto broker at
127.0.0.1:1883 and a real ``edgeloop control``: route results come from the agent's own serving
runtime (the deployed model and its version), malformed messages go to the dead-letter topic."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.control.process import control_process
from tests.tiny_models import make_linear_onnx

from edgeloop.core.types import Manifest, TensorSpec
from edgeloop.sdk.control_client import ControlClient

aiomqtt = pytest.importorskip("aiomqtt")
MANIFEST = Manifest("lin", "onnx", (TensorSpec("input", (None, 4)),),
                    (TensorSpec("output", (None, 3)),))  # fmt: skip
_RUN = "import sys, typer; from edgeloop.cli.agent import agent; sys.argv.pop(1); typer.run(agent)"
N = 50


def _broker_up() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 1883), timeout=1).close()
    except OSError:
        return False
    return True


pytestmark = pytest.mark.skipif(
    not _broker_up(), reason="no MQTT broker at 127.0.0.1:1883 (apt install mosquitto)"
)


def start_agent(home: Path, control: str, token: str, *args: str) -> tuple[Any, str]:
    cmd = [sys.executable, "-c", _RUN, "agent", "--control", control, "--port", "0",
           "--home", str(home), "--poll-s", "0.2", "--log-level", "warning",
           "--enroll-token", token, *args]  # fmt: skip
    with (home.parent / "agent.log").open("ab") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, env=dict(os.environ))
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(timeout=10)
        raise RuntimeError((home.parent / "agent.log").read_text()[-2000:])
    return proc, str(json.loads(line)["url"])


def wait(http: httpx.Client, check: Any, what: str, timeout_s: float = 90) -> dict[str, Any]:
    """The agent's status once ``check(status)`` holds (TimeoutError after ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        status: dict[str, Any] = http.get("/agent/status").json()
        if check(status):
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {timeout_s} s; last status {status}")
        time.sleep(0.1)


async def exchange(base: str, rows: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Publish ``rows`` good messages and 5 malformed ones; collect results and dead letters."""
    results: list[dict[str, Any]] = []
    dead: list[dict[str, Any]] = []
    async with aiomqtt.Client("127.0.0.1", 1883, identifier=f"t-{uuid.uuid4().hex[:8]}") as c:
        await c.subscribe(f"{base}/out/#", qos=1)
        await c.subscribe("edgeloop/deadletter", qos=1)
        for i in range(rows):
            doc = {"features": [0.1 * i, 0.2, 0.3, 0.4], "id": f"m{i}"}
            await c.publish(f"{base}/in/s1", json.dumps(doc), qos=1)
        for i in range(5):
            await c.publish(f"{base}/in/s1", f"not json {i}", qos=1)
        async with asyncio.timeout(90):
            async for message in c.messages:
                doc = json.loads(message.payload)
                if str(message.topic).startswith(base):
                    results.append(doc)
                elif doc.get("source_topic", "").startswith(base):
                    dead.append(doc)
                if len(results) == rows and len(dead) == 5:
                    break
    return results, dead


def test_routes_run_on_the_served_model(tmp_path: Path) -> None:
    base = f"t{uuid.uuid4().hex[:10]}"
    route = f"FROM {base}/in/+ INTO lin THEN {base}/out/{{topic[2]}}"
    with control_process(tmp_path / "ctl", None, "--tick-s", "0.1") as ctl:
        token = (tmp_path / "ctl" / "control" / "admin.token").read_text().strip()
        with ControlClient(ctl.url, token) as client:
            client.publish_model(make_linear_onnx(tmp_path / "v1.onnx", seed=1), MANIFEST)
            enroll = client.enrollment_token()["token"]
            proc, url = start_agent(tmp_path / "node", ctl.url, enroll, "--route", route)
            try:
                with httpx.Client(base_url=url, timeout=10) as http:
                    wait(http, lambda s: s["node_id"] and s["reports"], "enrollment")
                    plan = {"soak_s": 0, "watch_s": 0.5}
                    rollout = client.deploy({"name": "d1", "model": "lin:1", "plan": plan})
                    assert client.wait_rollout(rollout["rollout_id"], {"COMPLETED"})
                    # Subscribed before anything is published: a QoS 1 message to a topic nobody
                    # subscribes to yet is not kept for a later subscriber.
                    wait(http, lambda s: s["routes"]["connected"], "the route subscribed")
                    results, dead = asyncio.run(exchange(base, N))
                    routes = wait(http, lambda s: s["routes"]["routes"]["route1"]["published"] == N,
                                  f"{N} results counted")  # fmt: skip
                    routes = routes["routes"]
            finally:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:  # a slow shutdown must not leave it running
                    proc.kill()
                    proc.wait(timeout=10)
                assert proc.stdout is not None
                proc.stdout.close()
    assert [r["source_id"] for r in results] == [f"m{i}" for i in range(N)]  # in order
    assert {r["model_version"] for r in results} == {"1"} and {r["model"] for r in results} == {
        "lin"
    }
    assert all(len(r["outputs"][0]) == 3 and r["latency_ms"] > 0 for r in results)
    assert len(dead) == 5 and all(d["reason"] for d in dead)
    assert routes["connected"] and routes["routes"]["route1"]["published"] == N


def test_bad_routes_and_broker_urls_are_refused_before_serving() -> None:
    from edgeloop.agent.route_host import RouteSettings
    from edgeloop.core.errors import ConfigError

    assert RouteSettings.parse([], "mqtt://127.0.0.1:1883", "c") is None
    good = RouteSettings.parse(["FROM a/+ INTO lin THEN b/{topic[1]}"], "mqtt://u:p@h:1884", "c")
    assert good is not None and (good.broker.host, good.broker.port) == ("h", 1884)
    with pytest.raises(ConfigError, match="INTO"):
        RouteSettings.parse(["FROM a/+ THEN b"], "mqtt://127.0.0.1", "c")
    with pytest.raises(ConfigError, match="mqtt://"):
        RouteSettings.parse(["FROM a/+ INTO lin THEN b"], "http://127.0.0.1:1883", "c")
