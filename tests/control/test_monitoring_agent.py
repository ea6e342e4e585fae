"""The agent's own telemetry code to the control plane's fleet monitoring: a served model with a
reference profile sees a shifted stream; the agent's Telemetry puts its drift events and a
metrics snapshot into the real outbox; the items go to the control plane as the shipper sends
them (``Item.to_wire``); /api/v1/monitoring shows the node drifting and the rule fires."""

from __future__ import annotations

import time
from pathlib import Path

from tests.agent.test_agent_monitor import _no_app, _profile, _shifted
from tests.control.harness import control
from tests.serving.harness import serving
from tests.tiny_models import make_linear_onnx

from edgeloop.agent.health import HealthRecorder
from edgeloop.agent.outbox import ItemKind, Outbox
from edgeloop.agent.telemetry import Telemetry
from edgeloop.control import alert_store
from edgeloop.control.alerts import Rule, RuleKind
from edgeloop.serving.feedback import monitoring_status

FEATURES = 4


def test_agent_telemetry_makes_the_node_drifting_at_the_control_plane(tmp_path: Path) -> None:
    model = make_linear_onnx(tmp_path / "lin.onnx", features=FEATURES)
    (tmp_path / "lin.profile.npz").write_bytes(_profile(model))
    outbox = Outbox.open(tmp_path / "outbox.sqlite")
    tel = Telemetry(outbox, metrics_every_s=60.0, sample_rate=0.0, source="node")
    with serving([model]) as h:
        h.catalog.monitor_sinks.append(tel.monitor_event)
        for row in _shifted(200):
            assert h.post("/predict", json={"features": row.tolist()}).status_code == 200
        h.call(tel.flush)
        tel.monitoring = lambda: monitoring_status(h.catalog)
        tel.put_now(ItemKind.METRICS, [tel.snapshot(HealthRecorder(_no_app), since=0.0)])
    items = [i.to_wire() for i in outbox.batch(max_items=1000, max_bytes=1 << 30)]
    outbox.close()
    assert {i["kind"] for i in items} == {"event", "metrics"}
    with control(tmp_path / "home") as ctl:
        node = ctl.enroll("cam")
        url = f"/api/v1/nodes/{node.node_id}/telemetry"
        answer = ctl.ok("POST", url, json={"items": items}, headers=node.auth)
        assert answer["accepted"] == len(items) and answer["rejected"] == []
        [row] = ctl.ok("GET", "/api/v1/monitoring?model=lin")["rows"]
        assert (row["node_id"], row["version"], row["drifting"]) == (node.node_id, "1", True)
        assert row["drift_ratio"]["input"] > 1 and row["samples_seen"] == 200
        assert row["last_event"]["type"] == "drift" and row["monitor_state"] == "active"
        rule = Rule("drift-1", RuleKind.DRIFTING_NODES, k=1)
        changes = ctl.plane.write(
            "alerts", lambda c: alert_store.evaluate_and_store(c, (rule,), time.time())
        )
        [alert] = changes.opened
        assert alert.subject == "lin:1" and alert.figures["drifting_nodes"] == [node.node_id]
