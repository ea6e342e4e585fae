"""The dashboard's data-set pages, label queue, rollout timeline, outbox backlog and throttled
answers, without a browser: each handler called as the router would, on a real control plane
over a temporary SQLite home (tests/browser/test_dashboard_data.py drives them in Chromium)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from starlette.requests import Request
from starlette.responses import Response
from tests.browser.test_ui_parts import EVIL, Plane, home  # noqa: F401 (the fixture)

from edgeloop.agent.outbox import ItemKind, Outbox
from edgeloop.control import schemas, tables
from edgeloop.control.throttle import FailureLimit, Throttled
from edgeloop.control.ui import backlog, fleet_view, timeline
from edgeloop.control.ui.datasets import DatasetPages
from edgeloop.control.ui.fleet_view import FleetQuery
from edgeloop.data.dataset import Modality
from edgeloop.data.samples import UNLABELLED, SampleSet
from edgeloop.registry.datasets import Provenance
from edgeloop.serving.errors import BadRequestError


def _call(on: Plane, handler: Any, path: str, params: dict[str, str], query: str = "") -> Any:
    headers = [(b"cookie", f"edgeloop_session={on.reader}".encode())]
    scope = {
        "type": "http", "method": "GET", "path": path, "query_string": query.encode(),
        "headers": headers, "path_params": params, "scheme": "http",
        "server": ("testserver", 80), "root_path": "",
    }  # fmt: skip

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    return asyncio.run(on.ui.guarded(handler)(Request(scope, receive)))


def _text(r: Response) -> str:
    return bytes(r.body).decode()


def test_outbox_backlog_counts_rows_bytes_and_age_per_kind(tmp_path: Path) -> None:
    with Outbox.open(tmp_path / "outbox.sqlite") as box:
        assert box.backlog().to_report(time.time()) == {
            "rows": 0, "bytes": 0, "oldest_age_s": None, "kinds": {},
        }  # fmt: skip
        box.put_many([(ItemKind.METRICS, {"requests": i}) for i in range(3)])
        box.put(ItemKind.EVENT, {"state": "STAGE"})
        found = box.backlog()
        stats = box.stats()
        report = found.to_report(time.time() + 10.0)
        assert report["rows"] == 4 == stats.total_items
        assert report["bytes"] == stats.bytes
        assert {k: v["rows"] for k, v in report["kinds"].items()} == {"metrics": 3, "event": 1}
        assert sum(v["bytes"] for v in report["kinds"].values()) == stats.bytes
        assert 10.0 <= report["oldest_age_s"] < 70.0  # the first metrics item's age
        assert (
            report["kinds"]["event"]["oldest_age_s"] <= report["kinds"]["metrics"]["oldest_age_s"]
        )
        batch = box.batch(10)
        box.ack([i.id for i in batch])
        assert box.backlog().to_report(time.time())["rows"] == 0
    # The control plane checks the field it shows: a negative count is a 400 naming it.
    good = {"revision": 0, "outbox": report}
    schemas.parse(schemas.ReportBody, json.dumps(good).encode())
    bad = {"revision": 0, "outbox": {**report, "rows": -1}}
    with pytest.raises(BadRequestError, match="outbox"):
        schemas.parse(schemas.ReportBody, json.dumps(bad).encode())


def _node(conn: Any, i: int, report: dict[str, Any] | None) -> None:
    conn.execute(
        tables.nodes.insert().values(
            node_id=f"id-{i}", name=f"n-{i}", token_hash=f"h{i}", labels="{}",
            capabilities="{}", device_class="x", enrolled_at=0.0, desired_revision=0,
            reported=None if report is None else json.dumps(report), last_seen=time.time(),
        )
    )  # fmt: skip


def test_the_fleet_filters_and_shows_nodes_with_a_backlog(home: Plane) -> None:  # noqa: F811
    waiting = {"rows": 7, "bytes": 3 << 10, "oldest_age_s": 300.0, "kinds": {}}
    reports = [None, {"revision": 0}, {"revision": 0, "outbox": {**waiting, "rows": 0}}]
    reports.append({"revision": 0, "outbox": waiting})
    with home.plane.db.write() as conn:
        for i, report in enumerate(reports):
            _node(conn, i, report)
    with home.plane.db.engine.connect() as conn:
        every = fleet_view.read(conn, FleetQuery())
        some = fleet_view.read(conn, FleetQuery.from_params({"backlog": backlog.WAITING}))
    assert every.matching == 4 and [n.node_id for n in some.lines] == ["id-3"]
    assert some.total == 4
    assert backlog.cell(some.lines[0].report) == "7 rows, 3.0 KiB<br><small>oldest 5 min</small>"
    assert "n/a" in backlog.cell(every.lines[0].report)
    table = backlog.section_body(reports[3])
    assert "all kinds" in table and "3.0 KiB" in table


def _library(on: Plane) -> Any:
    pages = DatasetPages(on.plane)
    x = np.arange(24, dtype=np.float32).reshape(6, 4)
    y = np.array([0, 1, UNLABELLED, UNLABELLED, 1, UNLABELLED], np.int64)
    ids = tuple(f"req-{i}" for i in range(6))
    samples = SampleSet(x, y, ids, ("cat", EVIL), Modality.TABULAR)
    span = (datetime(2026, 12, 7, 1, tzinfo=UTC), datetime(2026, 12, 7, 2, tzinfo=UTC))
    prov = Provenance((EVIL, "node-b"), "lin:1", ("uncertain",), span, (), note=EVIL)
    version = pages.library.add("caps", samples, prov)
    return pages, version


def test_data_set_pages_show_provenance_counts_escaped_and_download_tasks(
    home: Plane,  # noqa: F811
) -> None:
    pages, version = _library(home)
    assert (version.entry.samples, version.entry.labelled) == (6, 3)
    listed = _call(home, pages.list, "/ui/datasets", {})
    assert listed.status_code == 200 and "caps:1" in _text(listed)
    assert EVIL not in _text(listed) and "&lt;script&gt;" in _text(listed)
    one = _call(home, pages.detail, "/ui/datasets/caps/1", {"name": "caps", "version": "1"})
    body = _text(one)
    assert one.status_code == 200 and EVIL not in body
    for fact in ("lin:1", "uncertain", "2026-12-07T01:00:00+00:00", "node-b", "req-")[:4]:
        assert fact in body
    assert "<td>cat</td><td>1</td>" in body  # labelled samples per class
    queue = _call(home, pages.queue, "/ui/labels", {})
    assert "caps:1" in _text(queue) and "<td>3</td>" in _text(queue)
    params = {"name": "caps", "version": "1"}
    got = _call(home, pages.tasks, "/ui/datasets/caps/1/tasks", params, "format=csv")
    assert got.status_code == 200 and "attachment" in got.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(_text(got))))
    assert [r["sample_id"] for r in rows] == ["req-2", "req-3", "req-5"]  # unlabelled only
    studio = _call(home, pages.tasks, "/ui/datasets/caps/1/tasks", params)
    assert len(json.loads(bytes(studio.body))) == 3
    # Unknown ids and bad values are pages with their status, not 500s.
    gone = _call(home, pages.detail, "/ui/datasets/caps/9", {"name": "caps", "version": "9"})
    assert gone.status_code == 404
    bad = _call(home, pages.detail, "/ui/datasets/caps/x", {"name": "caps", "version": "x"})
    assert bad.status_code == 400
    odd = _call(home, pages.tasks, "/ui/datasets/caps/1/tasks", params, "format=xml")
    assert odd.status_code == 400 and "label-studio" in _text(odd)


def test_label_studio_tasks_of_images_download_as_a_zip_with_their_pngs(
    home: Plane,  # noqa: F811
) -> None:
    pages = DatasetPages(home.plane)
    x = np.random.default_rng(0).random((4, 1, 8, 8), np.float32)
    y = np.array([0, UNLABELLED, UNLABELLED, 1], np.int64)
    pages.library.add("imgs", SampleSet(x, y, ("a", "b", "c", "d"), ("x", "y"), Modality.IMAGE))
    params = {"name": "imgs", "version": "1"}
    got = _call(home, pages.tasks, "/ui/datasets/imgs/1/tasks", params)
    assert got.status_code == 200 and got.headers["content-type"] == "application/zip"
    assert 'filename="imgs-1-tasks.zip"' in got.headers["content-disposition"]
    archive = zipfile.ZipFile(io.BytesIO(bytes(got.body)))
    tasks = json.loads(archive.read("imgs-1-tasks.json"))
    assert [t["data"]["sample_id"] for t in tasks] == ["b", "c"]
    for t in tasks:  # each task's image is in the zip where the task says
        assert archive.read(t["data"]["image"]).startswith(b"\x89PNG")


def test_timeline_steps_last_until_the_next_and_every_label_is_escaped() -> None:
    moves = [(10.0, "STAGE", "staged"), (12.0, "WATCH", EVIL), (15.0, "COMMIT", ""),
             (15.5, "IDLE", "")]  # fmt: skip
    steps = timeline._steps(moves, 40.0, skip=("IDLE",))
    assert [(s.state, s.start, s.end) for s in steps] == [
        ("STAGE", 10.0, 12.0), ("WATCH", 12.0, 15.0), ("COMMIT", 15.0, 15.5),
    ]  # fmt: skip
    line = timeline.Timeline(
        9.0, 40.0, [timeline.Lane("Rollout", None, []), timeline.Lane(EVIL, "id-1", steps, 2)], 1
    )
    html = timeline.part(line)
    assert EVIL not in html and "<svg" in html and html.count("<rect ") >= 3
    assert "<script" not in html.lower().replace("&lt;script", "")
    assert "+3.0 s" in html  # WATCH started 3 s after the rollout
    assert "· w2</text>" in html and "(wave 2): WATCH at +3.0 s for 3.0 s" in html


def _asgi(
    app: Any, path: str, headers: list[tuple[bytes, bytes]]
) -> tuple[int, dict[str, str], bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "headers": headers,
             "client": ("192.0.2.7", 5000), "query_string": b""}  # fmt: skip
    asyncio.run(app(scope, receive, send))
    start = sent[0]
    found = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    return int(start["status"]), found, b"".join(m.get("body", b"") for m in sent[1:])


def test_a_throttled_dashboard_request_is_answered_html_with_retry_after() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("a source over its limit never reaches the app")

    limit = FailureLimit(burst=3, per_s=0.5, clock=lambda: 100.0)  # a still clock: exact
    for _ in range(3):
        limit.failed("192.0.2.7")
    layer = Throttled(app, limit)
    status, headers, body = _asgi(layer, "/ui/sign-in", [])
    assert status == 429 and int(headers["retry-after"]) >= 1
    assert headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in headers["content-security-policy"]
    assert b"try again in" in body and b"<script" not in body
    status, headers, body = _asgi(layer, "/ui/fleet", [(b"hx-request", b"true")])
    assert status == 429 and int(headers["retry-after"]) >= 1 and body == b""
    status, headers, body = _asgi(layer, "/api/v1/nodes", [])
    assert status == 429 and headers["content-type"] == "application/json"
    assert json.loads(body)["type"] == "TooManyFailuresError"
