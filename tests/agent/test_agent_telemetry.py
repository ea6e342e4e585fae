"""The agent's telemetry wired end to end: ``edgeloop agent`` and ``edgeloop control`` as OS
processes; updater events, metrics snapshots and sampled requests arrive in the control plane's
telemetry store, each once, and match what the agent's outbox says it put."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from tests.agent.agent_process import WAIT_S, AgentProcess
from tests.control.process import control_process
from tests.tiny_models import make_linear_onnx

from edgeloop.core.types import Manifest, TensorSpec
from edgeloop.sdk.control_client import ControlClient

MANIFEST = Manifest("lin", "onnx", (TensorSpec("input", (None, 4)),),
                    (TensorSpec("output", (None, 3)),))  # fmt: skip
ROW = [0.1, 0.2, 0.3, 0.4]
DONE = {"COMPLETED", "HALTED", "ROLLED_BACK"}


def stored(client: ControlClient, node: str, kind: str | None = None) -> list[dict[str, Any]]:
    params = {"node": node, "limit": "100000", **({"kind": kind} if kind else {})}
    items: list[dict[str, Any]] = client.call("GET", "/api/v1/telemetry", params=params)["items"]
    return items


def wait_shipped(agent: AgentProcess, timeout_s: float = WAIT_S) -> dict[str, Any]:
    """Wait until the outbox is empty (everything put was acked) and no samples are buffered."""

    def empty(status: dict[str, Any]) -> dict[str, Any] | None:
        tel = status["telemetry"]
        done = tel["outbox"]["total_items"] == 0 and tel["buffered_samples"] == 0
        return tel if done else None

    tel: dict[str, Any] = agent.wait_for(empty, timeout_s, "an empty outbox")
    return tel


def shipped_and_stored(
    agent: AgentProcess, client: ControlClient, node: str, timeout_s: float = WAIT_S
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The agent's telemetry status with its outbox empty and the control plane's store read at
    one moment: the agent put nothing between the two status reads around the store's (a metrics
    snapshot is put every second; one put and shipped in between would be stored, not counted)."""
    deadline = time.monotonic() + timeout_s
    while True:
        tel = wait_shipped(agent)
        items = stored(client, node)
        after = agent.status()["telemetry"]
        same = after["puts"] == tel["puts"] and after["outbox"]["total_items"] == 0
        if same and after["shipper"]["items_acked"] == tel["shipper"]["items_acked"]:
            return tel, items
        if time.monotonic() > deadline:
            raise TimeoutError(f"the agent kept putting telemetry for {timeout_s} s: {after}")


def test_events_metrics_and_samples_arrive_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGELOOP_SAMPLE_RATE", "0.5")
    monkeypatch.setenv("EDGELOOP_METRICS_EVERY_S", "1")
    with control_process(tmp_path / "ctl", None, "--tick-s", "0.1") as ctl:
        token = (tmp_path / "ctl" / "control" / "admin.token").read_text().strip()
        with ControlClient(ctl.url, token) as client:
            client.publish_model(make_linear_onnx(tmp_path / "v1.onnx", seed=1), MANIFEST)
            agent = AgentProcess(tmp_path / "node", ctl.url, poll_s=0.2,
                                 enroll_token=client.enrollment_token()["token"])  # fmt: skip
            try:
                agent.wait_enrolled()
                plan = {"soak_s": 0, "watch_s": 0.5}
                first = client.deploy({"name": "d1", "model": "lin:1", "plan": plan})
                assert client.wait_rollout(first["rollout_id"], DONE)["state"] == "COMPLETED"
                for _ in range(40):
                    assert agent.infer("lin", ROW).status_code == 200
                # Two snapshots put after the last request: the second was taken after it, so
                # the windows put by then hold every request (and there are two windows).
                done = agent.status()["telemetry"]["puts"].get("metrics", 0)
                agent.wait_for(lambda s: s["telemetry"]["puts"].get("metrics", 0) >= done + 2,
                               what="two metrics snapshots after the requests")  # fmt: skip
                node = agent.status()["node_id"]
                tel, items = shipped_and_stored(agent, client, node)
            finally:
                agent.stop()
    ids = [i["id"] for i in items]
    assert len(ids) == len(set(ids))
    kinds = Counter(i["kind"] for i in items)
    assert kinds["sample"] == tel["puts"]["sample"] == 20  # every other one of 40 requests
    assert kinds["event"] == tel["puts"]["event"] >= 3  # the update's transitions
    assert kinds["metrics"] >= 2 and "dropped" not in kinds
    samples = [i for i in items if i["kind"] == "sample"]
    assert {(s["model"], s["model_version"]) for s in samples} == {("lin", "1")}
    assert samples[0]["payload"]["inputs"]["inputs"][0]["data"] == ROW
    metrics = [i["payload"] for i in items if i["kind"] == "metrics"]
    assert sum(m["requests"] for m in metrics) == 40
    busy = [m for m in metrics if m["requests"]]
    assert all(m["p50_ms"] > 0 and m["p99_ms"] >= m["p50_ms"] for m in busy)
    assert all(m["p50_ms"] is None for m in metrics if not m["requests"])
    states = [i["payload"]["state"] for i in items if i["kind"] == "event"]
    assert "COMMIT" in states or "IDLE" in states
    assert tel["shipper"]["items_acked"] == len(items)


def test_bad_telemetry_options_are_refused_naming_the_option() -> None:
    from edgeloop.agent.telemetry import TelemetrySettings
    from edgeloop.core.errors import ConfigError

    with pytest.raises(ConfigError, match="--outbox-mb"):
        TelemetrySettings(outbox_mb=0)
    with pytest.raises(ConfigError, match="--metrics-every-s"):
        TelemetrySettings(metrics_every_s=-1)
    with pytest.raises(ConfigError, match="--sample-rate"):
        TelemetrySettings(sample_rate=1.5)
