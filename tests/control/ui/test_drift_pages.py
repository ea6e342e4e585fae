"""The drift pages on a real control plane's database, SQLite and PostgreSQL: telemetry stored by
the real ingest functions, the pages called through the dashboard's session guard."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from edgeloop.control import telemetry
from edgeloop.control.plane import ControlPlane
from edgeloop.control.ui import security, sessions
from edgeloop.control.ui.pages_drift import DriftPages
from edgeloop.control.ui.pages_registry import RegistryPages
from edgeloop.control.ui.routes import Dashboard
from edgeloop.control.ui.sessions import Role


def _item(kind: str, ago: float, payload: dict[str, Any]) -> dict[str, Any]:
    at = datetime.fromtimestamp(time.time() - ago, UTC).isoformat()
    return {"id": str(uuid.uuid4()), "kind": kind, "created_at": at, "payload": payload}


def _metrics(ago: float, ratio: float) -> dict[str, Any]:
    watched = {"version": "3", "drifting": ratio > 1, "drift_ratio": {"input": ratio},
               "performance": {"accuracy": 0.8, "estimated_accuracy": 0.75}}  # fmt: skip
    return _item("metrics", ago, {"model": "kws", "model_version": "3",
                                  "monitoring": {"kws": watched}})  # fmt: skip


def _call(ui: Dashboard, handler: Any, path: str, params: dict[str, str], cookie: str) -> Any:
    scope = {
        "type": "http", "method": "GET", "path": path, "query_string": b"",
        "headers": [(b"cookie", f"{security.COOKIE}={cookie}".encode())],
        "path_params": params, "scheme": "http", "server": ("testserver", 80), "root_path": "",
    }  # fmt: skip
    return asyncio.run(ui.guarded(handler)(Request(scope)))


def test_drift_json_tables_and_monitoring_section(tmp_path: Path, db_url: str) -> None:
    plane, _ = ControlPlane.open(tmp_path / "home", db_url)
    try:
        ui, pages = Dashboard(plane), DriftPages(plane)
        cookie, _ = sessions.start(plane.db, Role.READER)
        items = [_metrics(300, 0.5), _item("event", 200, {"type": "drift", "model": "kws",
                 "model_version": "3"}), _metrics(100, 1.5)]  # fmt: skip
        rows, rejected = telemetry.prepare("node-a", items, time.time())
        assert not rejected
        with plane.db.write() as conn:
            telemetry.store_rows(conn, "node-a", rows, rejected)
        params = {"model": "kws", "version": "3"}
        answer: Response = _call(ui, pages.columns, "/ui/monitoring/kws/3/drift.json", params,
                                 cookie)  # fmt: skip
        assert answer.status_code == 200
        cols = orjson.loads(bytes(answer.body))
        assert [x for x in cols["drift_ratio_max"] if x is not None] == [0.5, 1.5]
        assert [x for x in cols["estimated_accuracy"] if x is not None] == [0.75, 0.75]
        assert [a["type"] for a in cols["alarm_list"]] == ["drift"] and cols["reports"] == 2
        page = bytes(_call(ui, pages.page, "/ui/monitoring/kws/3", params, cookie).body).decode()
        assert "Drift of kws:3" in page and page.count("<time ") == 3 + 1  # 3 bins, 1 alarm
        missing = _call(ui, pages.columns, "/ui/monitoring/kws/4/drift.json",
                        {"model": "kws", "version": "4"}, cookie)  # fmt: skip
        assert missing.status_code == 404 and b"no node has reported" in bytes(missing.body)
        monitoring = _call(ui, RegistryPages(plane).monitoring, "/ui/monitoring", {}, cookie)
        text = bytes(monitoring.body).decode()
        assert "1 of 1 node/version views drifting" in text
        assert 'data-series="/ui/monitoring/kws/3/drift.json"' in text
    finally:
        plane.close()
