"""Fleet monitoring: telemetry folded per (model, version, node), answered at /api/v1/monitoring."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from tests.control.harness import control

from edgeloop.control import monitoring
from edgeloop.control.monitoring import Filters, Mark, Snapshot
from edgeloop.core.errors import ConfigError
from edgeloop.serving.watch import EventType

T0 = datetime(2026, 11, 22, 3, 4, 5, tzinfo=UTC).timestamp()


def watched(drifting: bool, estimated: float = 0.9, ratio: float = 0.5) -> dict[str, Any]:
    """A model's ``monitoring`` entry as the agent's metrics item carries it."""
    return {
        "version": "2", "state": "active", "reason": "", "samples_seen": 400,
        "alarms": {"input": 1} if drifting else {},
        "quality": {"samples": 400, "wrong_shape": 0, "nonfinite_samples": 3, "out_of_range": 7},
        "performance": {"labelled": 50, "window": 200, "accuracy": 0.88, "macro_f1": 0.8,
                        "estimated_accuracy": estimated},
        "state_bytes": 9000, "drift_ratio": {"input": ratio}, "drifting": drifting,
    }  # fmt: skip


def metrics(drifting: bool = False, **model: Any) -> dict[str, Any]:
    return {"window_s": 60.0, "model": "digits", "model_version": "2", "requests": 200,
            "errors": 4, "p50_ms": 1.5, "p99_ms": 9.0, "sampled_seen": 0,
            "monitoring": {"digits": {**watched(drifting), **model}}}  # fmt: skip


def drift_event() -> dict[str, Any]:
    return {"type": "drift", "model": "digits", "model_version": "2", "kind": "input",
            "score": 3.0, "threshold": 1.0, "sample_index": 130, "top_features": [],
            "at": "2026-11-22T03:04:06.000+00:00", "detail": "x", "source": "agent"}  # fmt: skip


def item(kind: str, payload: Any, at: float = T0) -> dict[str, Any]:
    created = datetime.fromtimestamp(at, UTC).isoformat()
    return {"id": str(uuid.uuid4()), "kind": kind, "created_at": created,
            "content_type": "application/json", "payload": payload}  # fmt: skip


def row(kind: str, payload: Any, at: float = T0) -> dict[str, Any]:
    return {"kind": kind, "content_type": "application/json", "payload": json.dumps(payload),
            "created_at": at}  # fmt: skip


# --- the fold (pure) -------------------------------------------------------------------------


def test_fold_takes_each_watched_model_of_a_metrics_item() -> None:
    [snap] = monitoring.fold("n1", [row("metrics", metrics(drifting=True))])
    assert isinstance(snap, Snapshot)
    assert (snap.node_id, snap.model, snap.version, snap.at) == ("n1", "digits", "2", T0)
    f = snap.figures
    assert f["drifting"] is True and f["drift_ratio"] == {"input": 0.5}
    assert f["windowed_accuracy"] == 0.88 and f["estimated_accuracy"] == 0.9
    assert (f["requests"], f["errors"], f["p50_ms"], f["p99_ms"]) == (200, 4, 1.5, 9.0)
    assert f["quality"]["out_of_range"] == 7


def test_fold_takes_monitor_events_and_skips_everything_else() -> None:
    rows = [
        row("event", drift_event()),
        row("event", {"state": "COMMIT", "detail": "updater transition"}),
        row("event", {"type": "gossip", "model": "digits", "model_version": "2"}),
        row("sample", {"inputs": [1, 2]}),
        row("metrics", ["not", "an", "object"]),
        {**row("sample", {}), "content_type": "application/octet-stream", "payload": "AAAA"},
    ]
    [mark] = monitoring.fold("n1", rows)
    assert isinstance(mark, Mark) and mark.type is EventType.DRIFT and mark.event["score"] == 3.0


def test_fold_keeps_a_served_but_unwatched_model() -> None:
    payload = {**metrics(), "monitoring": {}}
    [snap] = monitoring.fold("n1", [row("metrics", payload)])
    assert snap.figures.get("drifting") is None and snap.figures["requests"] == 200


def test_filters_refuse_unknown_and_overlong_fields() -> None:
    assert Filters.from_query({"model": "m", "node": "x"}) == Filters("m", None, "x")
    with pytest.raises(ConfigError, match="'color'"):
        Filters.from_query({"color": "red"})
    with pytest.raises(ConfigError, match="'version'"):
        Filters.from_query({"version": "v" * 129})


# --- stored and answered ---------------------------------------------------------------------


def test_a_node_drift_state_is_answered_per_version_and_node(tmp_path: Path, db_url: str) -> None:
    with control(tmp_path / "home", db_url) as ctl:
        a, b = ctl.enroll("a"), ctl.enroll("b")
        for node, drifting in ((a, True), (b, False)):
            url = f"/api/v1/nodes/{node.node_id}/telemetry"
            ctl.ok("POST", url, json={"items": [item("metrics", metrics(drifting))]},
                   headers=node.auth)  # fmt: skip
        rows = ctl.ok("GET", "/api/v1/monitoring?model=digits&version=2")["rows"]
        by = {r["node_id"]: r for r in rows}
        assert by[a.node_id]["drifting"] is True and by[b.node_id]["drifting"] is False
        assert by[a.node_id]["error_rate"] == pytest.approx(0.02)
        assert by[a.node_id]["latency_ms"] == {"p50": 1.5, "p99": 9.0}
        assert by[a.node_id]["estimated_accuracy"] == 0.9
        only = ctl.ok("GET", f"/api/v1/monitoring?node={b.node_id}")["rows"]
        assert [r["node_id"] for r in only] == [b.node_id]
        assert ctl.ok("GET", "/api/v1/monitoring?version=3")["rows"] == []


def test_an_older_or_repeated_item_changes_nothing(tmp_path: Path, db_url: str) -> None:
    with control(tmp_path / "home", db_url) as ctl:
        node = ctl.enroll("a")
        url = f"/api/v1/nodes/{node.node_id}/telemetry"
        new = item("metrics", metrics(False), T0 + 60)
        ctl.ok("POST", url, json={"items": [new]}, headers=node.auth)
        old = item("metrics", metrics(True), T0)
        ctl.ok("POST", url, json={"items": [old]}, headers=node.auth)
        ctl.ok("POST", url, json={"items": [new]}, headers=node.auth)
        [r] = ctl.ok("GET", "/api/v1/monitoring")["rows"]
        assert r["drifting"] is False
        # A drift event after the snapshot marks the version drifting until the next snapshot.
        ctl.ok("POST", url, json={"items": [item("event", drift_event(), T0 + 61)]},
               headers=node.auth)  # fmt: skip
        [r] = ctl.ok("GET", "/api/v1/monitoring")["rows"]
        assert r["drifting"] is True and r["last_event"]["kind"] == "input"
        ctl.ok("POST", url, json={"items": [item("metrics", metrics(False), T0 + 120)]},
               headers=node.auth)  # fmt: skip
        [r] = ctl.ok("GET", "/api/v1/monitoring")["rows"]
        assert r["drifting"] is False


def test_bad_queries_are_4xx_naming_the_field(tmp_path: Path) -> None:
    with control(tmp_path / "home") as ctl:
        bad = ctl.request("GET", "/api/v1/monitoring?modle=x", headers=ctl.admin)
        assert bad.status_code == 400 and "'modle'" in bad.json()["error"]
        bad = ctl.request("GET", "/api/v1/alerts?state=burning", headers=ctl.admin)
        assert bad.status_code == 400 and "'state'" in bad.json()["error"]
        node = ctl.enroll("a")
        assert ctl.request("GET", "/api/v1/monitoring", headers=node.auth).status_code == 403
        assert ctl.request("GET", "/metrics").status_code == 401


def test_control_metrics_show_fleet_gauges(tmp_path: Path) -> None:
    with control(tmp_path / "home") as ctl:
        node = ctl.enroll("a")
        url = f"/api/v1/nodes/{node.node_id}/telemetry"
        ctl.ok("POST", url, json={"items": [item("metrics", metrics(True))]}, headers=node.auth)
        text = ctl.request("GET", "/metrics", headers=ctl.admin).text
        assert 'edgeloop_fleet_nodes_drifting{model="digits",version="2"} 1.0' in text
        assert 'edgeloop_fleet_version_nodes{model="digits",version="2"} 1.0' in text
        assert 'edgeloop_fleet_nodes{state="unreported"} 1.0' in text
        assert 'edgeloop_fleet_telemetry_items_total{outcome="accepted"}' in text


def test_newest_keeps_one_snapshot_per_key_and_the_drift_event_beside_a_later_one() -> None:
    quality = {**drift_event(), "type": "quality", "kind": "data_quality"}
    rows = [row("metrics", metrics(True), T0), row("metrics", metrics(False), T0 + 60),
            row("event", drift_event(), T0 + 10), row("event", quality, T0 + 20)]  # fmt: skip
    snaps, marks = monitoring.newest(monitoring.fold("n1", rows))
    assert [s.at for s in snaps] == [T0 + 60]
    assert [(m.type, m.at) for m in marks] == [(EventType.DRIFT, T0 + 10),
                                               (EventType.QUALITY, T0 + 20)]  # fmt: skip


def test_a_drift_event_then_a_quality_event_in_one_batch(tmp_path: Path, db_url: str) -> None:
    with control(tmp_path / "home", db_url) as ctl:
        node = ctl.enroll("a")
        quality = {**drift_event(), "type": "quality", "kind": "data_quality"}
        batch = [item("metrics", metrics(False), T0), item("event", drift_event(), T0 + 1),
                 item("event", quality, T0 + 2)]  # fmt: skip
        url = f"/api/v1/nodes/{node.node_id}/telemetry"
        ctl.ok("POST", url, json={"items": batch}, headers=node.auth)
        [r] = ctl.ok("GET", "/api/v1/monitoring")["rows"]
        assert r["drifting"] is True and r["last_event"]["type"] == "quality"
