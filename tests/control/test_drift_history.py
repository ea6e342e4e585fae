"""The drift history kept as telemetry arrives, and the backlog columns kept with each report,
on a real control plane's database (SQLite and PostgreSQL): telemetry and reports stored by the
real ingest functions, a database made before the backlog columns migrated in place."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from edgeloop.control import drift_history, fleet, tables, telemetry
from edgeloop.control.plane import ControlPlane
from edgeloop.control.ui import backlog, drift, fleet_view
from edgeloop.control.ui.fleet_view import FleetQuery


def _metrics(at: float, ratio: float, acc: float | None = 0.8) -> dict[str, Any]:
    watched = {"version": "3", "drifting": ratio > 1, "drift_ratio": {"input": ratio},
               "performance": {"accuracy": acc, "estimated_accuracy": 0.5}}  # fmt: skip
    return {
        "id": str(uuid.uuid4()),
        "kind": "metrics",
        "created_at": datetime.fromtimestamp(at, UTC).isoformat(),
        "payload": {"model": "kws", "model_version": "3", "monitoring": {"kws": watched}},
    }


def _alarm(at: float) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "kind": "event",
            "created_at": datetime.fromtimestamp(at, UTC).isoformat(),
            "payload": {"type": "drift", "model": "kws", "model_version": "3"}}  # fmt: skip


def _send(plane: ControlPlane, node: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    rows, rejected = telemetry.prepare(node, items, time.time())
    with plane.db.write() as conn:
        return telemetry.store_rows(conn, node, rows, rejected)


def _history(plane: ControlPlane) -> dict[float, Any]:
    h = tables.drift_history
    with plane.db.engine.connect() as conn:
        return {r.bin_start: r for r in conn.execute(sa.select(h).order_by(h.c.bin_start))}


def test_history_counts_a_node_once_per_minute_and_feeds_the_chart(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    plane, _ = ControlPlane.open(tmp_path / "home", db_url)
    try:
        minute = drift_history._bin(time.time()) - 600  # ten minutes ago, a minute's start
        a = [_metrics(minute + 5, 0.5), _metrics(minute + 15, 1.5), _metrics(minute + 25, 1.8)]
        a.append(_alarm(minute + 20))
        assert _send(plane, "node-a", a)["accepted"] == 4
        b = [_metrics(minute + 10, 0.2, None), _metrics(minute + 40, 0.4, 0.6)]
        _send(plane, "node-b", b)
        _send(plane, "node-b", b)  # the same items again (a lost answer): nothing changes
        _send(plane, "node-a", [_metrics(minute + 70, 0.3)])  # the next minute
        _send(plane, "node-a", [_metrics(minute + 50, 2.5)])  # late: figures, not the node
        rows = _history(plane)
        assert sorted(rows) == [minute, minute + 60]
        first = rows[minute]
        assert (first.nodes_reporting, first.nodes_drifting, first.reports) == (2, 1, 6)
        assert (first.drift_ratio_max, first.alarms, first.reports_watched) == (2.5, 1, 6)
        assert (first.windowed_count, first.estimated_count) == (5, 6)
        assert first.windowed_sum == pytest.approx(0.8 * 4 + 0.6)
        second = rows[minute + 60]
        assert (second.nodes_reporting, second.nodes_drifting, second.reports) == (1, 0, 1)
        with plane.db.engine.connect() as conn:
            items = drift.columns(conn, "kws", "3", time.time())
            monkeypatch.setattr(drift, "RAW_MAX", 0)
            cols = drift.columns(conn, "kws", "3", time.time())
        assert items["source"] == "items" and items["reports"] == 7
        assert cols["source"] == "history" and cols["reports"] == 7 and len(cols["t"]) == 2
        assert cols["nodes_reporting"] == [2, 1] and cols["nodes_drifting"] == [1, 0]
        assert cols["drift_ratio_max"] == [2.5, 0.3] and cols["alarms"] == [1, None]
        assert cols["estimated_accuracy"] == [pytest.approx(0.5), pytest.approx(0.5)]
        assert [x["node_id"] for x in cols["alarm_list"]] == ["node-a"]
        with plane.db.write() as conn:  # past the retention: pruned
            drift_history.prune(conn, minute + drift_history.RETENTION_S + 30, force=True)
        assert sorted(_history(plane)) == [minute + 60]
    finally:
        plane.close()


def test_backlog_columns_filter_and_migrate_an_older_database(tmp_path: Path, db_url: str) -> None:
    old = sa.MetaData()  # control_nodes as it was before the backlog columns
    sa.Table("control_nodes", old, *[sa.Column(c.name, c.type, primary_key=c.primary_key)
             for c in tables.nodes.columns if not c.name.startswith("backlog_")])  # fmt: skip
    engine = sa.create_engine(db_url)
    old.create_all(engine)
    waiting = {"rows": 7, "bytes": 3 << 10, "oldest_age_s": 300.0, "kinds": {}}
    with engine.begin() as conn:  # a node whose report came before the columns
        conn.execute(
            sa.text(
                "INSERT INTO control_nodes (node_id, name, token_hash, labels, capabilities, "
                "device_class, enrolled_at, reported, desired_revision) VALUES ('legacy', 'n-0', "
                "'h0', '{}', '{}', 'x', 0, :r, 0)"
            ),
            {"r": json.dumps({"outbox": waiting})},
        )
    engine.dispose()
    plane, _ = ControlPlane.open(tmp_path / "home", db_url)
    try:
        tables.create_tables(plane.db)  # a second time: nothing to add
        reports = [{"revision": 0}, {"revision": 0, "outbox": {**waiting, "rows": 0}},
                   {"revision": 0, "outbox": waiting},
                   {"revision": 0, "outbox": {"rows": 2**70, "bytes": "x"}}]  # fmt: skip
        with plane.db.write() as conn:
            for i, report in enumerate(reports, 1):
                conn.execute(
                    tables.nodes.insert().values(
                        node_id=f"id-{i}",
                        name=f"n-{i}",
                        token_hash=f"h{i}",
                        labels="{}",
                        capabilities="{}",
                        device_class="x",
                        enrolled_at=0.0,
                        desired_revision=0,
                    )
                )
                fleet.store_report(conn, f"id-{i}", fleet.check_report(report), time.time())
        with plane.db.engine.connect() as conn:
            some = fleet_view.read(conn, FleetQuery.from_params({"backlog": backlog.WAITING}))
            n = tables.nodes.c
            kept = dict(conn.execute(sa.select(n.node_id, n.backlog_rows)).all())
        assert [x.node_id for x in some.lines] == ["legacy", "id-3"] and some.matching == 2
        assert kept == {"legacy": None, "id-1": None, "id-2": 0, "id-3": 7, "id-4": None}
    finally:
        plane.close()
