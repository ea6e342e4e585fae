"""One node cannot break the admin's telemetry view (issue 17, item 4).

An item with ``created_at`` ``"0001-01-01T00:00:00+01:00"`` was stored, and from then on every
``GET /api/v1/telemetry`` answered 500 ("year 0 is out of range"). Against a real control plane:
times out of range or without a zone are rejected item by item naming ``created_at``; a row that
cannot be shown (stored before the check) is marked, and the read still answers 200.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from tests.control.process import control_process, enroll

ADMIN = "telemetry-times-admin-token-0123456789"
BAD_TIMES: list[Any] = [
    "0001-01-01T00:00:00+01:00",  # the item of the issue
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59-23:59",
    "1970-01-01T00:00:00Z",  # a node whose clock was never set
    "2999-01-01T00:00:00Z",  # far in the future
    "2026-11-22T03:04:05",  # no time zone
    "2026-13-01T00:00:00Z",
    "2026-11-22T03:04:05+99:00",
    "T" * 10_000,
    1700000000,
    None,
    True,
]


def _item(created_at: Any) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "kind": "metrics", "created_at": created_at,
            "content_type": "application/json", "payload": {"requests": 1}}  # fmt: skip


def test_bad_times_are_rejected_and_stored_rows_never_break_a_read(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with control_process(home, None, admin_token=ADMIN) as proc:
        admin = {"Authorization": f"Bearer {ADMIN}"}
        grant = httpx.post(f"{proc.url}/api/v1/enrollment-tokens", json={}, headers=admin)
        node = enroll(proc.url, grant.json()["token"], "n1")
        url = f"{proc.url}/api/v1/nodes/{node['node_id']}/telemetry"
        auth = {"Authorization": f"Bearer {node['node_token']}"}
        good = _item(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        bad = [_item(t) for t in BAD_TIMES]
        answer = httpx.post(url, json={"items": [*bad, good]}, headers=auth, timeout=30).json()
        assert answer["accepted"] == 1, answer
        reasons = {r["id"]: r["reason"] for r in answer["rejected"]}
        assert set(reasons) == {item["id"] for item in bad}
        assert all("created_at" in reason and len(reason) < 400 for reason in reasons.values())

        read = httpx.get(f"{proc.url}/api/v1/telemetry", headers=admin, timeout=30)
        assert read.status_code == 200, read.text
        assert [i["id"] for i in read.json()["items"]] == [good["id"]]

        # Rows stored before the check (or changed by hand): shown marked, never a 500.
        year_one = datetime.fromisoformat("0001-01-01T00:00:00+01:00").timestamp()
        with sqlite3.connect(home / "registry.db") as db:
            for item_id, created, payload in (
                (str(uuid.uuid4()), year_one, '{"requests": 1}'),
                (str(uuid.uuid4()), 1e300, '{"requests": 1}'),
                (str(uuid.uuid4()), time.time(), "{not json"),
            ):
                db.execute(
                    "INSERT INTO control_telemetry VALUES (?, ?, 'metrics', ?, ?,"
                    " 'application/json', ?, NULL, NULL)",
                    (node["node_id"], item_id, created, time.time(), payload),
                )
        read = httpx.get(f"{proc.url}/api/v1/telemetry", headers=admin, timeout=30)
        assert read.status_code == 200, read.text
        items = read.json()["items"]
        assert len(items) == 4
        marked = [i for i in items if "unreadable" in i]
        assert len(marked) == 3
        assert sum("created_at" in i["unreadable"] for i in marked) == 2
        assert sum("payload" in i["unreadable"] for i in marked) == 1
        shown = next(i for i in items if i["id"] == good["id"])
        assert shown["payload"] == {"requests": 1} and "unreadable" not in shown

        for since in ("0001-01-01T00:00:00+01:00", "0000-01-01T00:00:00Z", "x", "2026-01-01"):
            query = httpx.get(
                f"{proc.url}/api/v1/telemetry", params={"since": since}, headers=admin, timeout=30
            )
            assert query.status_code in (200, 400), query.text
