"""The fleet page (nodes, filtered, paged by keyset) and a node's page."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from edgeloop.control import fleet as fleet_rows
from edgeloop.control import monitoring, tables, telemetry
from edgeloop.control.plane import ControlPlane
from edgeloop.control.ui import backlog as backlog_view
from edgeloop.control.ui import fleet_view
from edgeloop.control.ui.fleet_view import FleetPage, FleetQuery, Seen
from edgeloop.control.ui.html import Html, escape, join, render, url
from edgeloop.control.ui.layout import View
from edgeloop.control.ui.sessions import Session
from edgeloop.control.ui.widgets import (
    badge,
    code,
    figure,
    labels,
    link,
    pairs,
    section,
    table,
    when,
)

# The device classes change when a new kind of device enrolls: a minute-old list is fine.
CLASSES_S = 60.0
SERIES_S = 3600.0  # the node page's chart: the last hour
HEADERS = (
    "Node",
    "Health",
    "Device class",
    "Active model",
    "Updater",
    "Last seen",
    "Drift",
    "Tier / parent",
    "Outbox backlog",
)


def _options(values: list[tuple[str, str]], chosen: str | None) -> Html:
    return join(
        Html(
            f'<option value="{escape(v)}"{" selected" if v == (chosen or "") else ""}>'
            f"{escape(label)}</option>"
        )
        for v, label in values
    )


class FleetPages:
    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        self._known: tuple[float, list[str]] = (-CLASSES_S - 1, [])

    async def _read(self, request: Request) -> tuple[FleetQuery, FleetPage]:
        query = FleetQuery.from_params(dict(request.query_params))
        found = await run_in_threadpool(
            self.plane.read, "reading the fleet page", lambda c: fleet_view.read(c, query)
        )
        return query, found

    async def _classes(self) -> list[str]:
        """The device-class filter's choices, read at most every ``CLASSES_S`` seconds."""
        at, known = self._known
        if time.monotonic() - at > CLASSES_S:
            known = await run_in_threadpool(
                self.plane.read, "listing device classes", fleet_view.device_classes
            )
            self._known = (time.monotonic(), known)
        return known

    async def fleet(self, request: Request, session: Session) -> View | Html:
        query, found = await self._read(request)
        if request.headers.get("hx-target") == "fleet-results":  # the filters changed
            return results(query, found)
        classes = [("", "any")] + [(c, c) for c in await self._classes()]
        content = render(
            "fleet.html",
            q=query.search or "",
            class_options=_options(classes, query.device_class),
            seen_options=_options(
                [("", "any")] + [(s.value, s.value) for s in Seen],
                None if query.seen is None else query.seen.value,
            ),
            limit_options=_options(
                [(str(n), str(n)) for n in fleet_view.PAGE_SIZES], str(query.limit)
            ),
            backlog_options=_options(
                [("", "any"), (backlog_view.WAITING, "rows waiting (> 0)")],
                backlog_view.WAITING if query.backlog else None,
            ),
            results=results(query, found),
        )
        return View("Fleet", "fleet", content)

    async def series(self, request: Request, session: Session) -> Response:
        """The node's metrics reports of the last ``SERIES_S`` seconds as columns for the chart:
        ``{"t": [unix s], "p99_ms": [...], "requests": [...], "errors": [...]}``."""
        node_id = request.path_params["node_id"]
        since = fleet_rows.iso(time.time() - SERIES_S) or ""
        params = {"node": node_id, "kind": "metrics", "since": since, "limit": "5000"}

        def run(conn: sa.Connection) -> list[dict[str, Any]]:
            fleet_rows.get(conn, node_id)  # NotFoundError for an unknown node
            return telemetry.query(conn, params)

        items = await run_in_threadpool(self.plane.read, f"reading node {node_id}'s metrics", run)
        cols: dict[str, list[Any]] = {"t": [], "p99_ms": [], "requests": [], "errors": []}
        for item in items:
            payload = item.get("payload")
            if not isinstance(payload, dict) or item.get("created_at") is None:
                continue
            cols["t"].append(datetime.fromisoformat(item["created_at"]).timestamp())
            for key in ("p99_ms", "requests", "errors"):
                value = payload.get(key)
                cols[key].append(value if isinstance(value, int | float) else None)
        return Response(
            orjson.dumps(cols), media_type="application/json", headers={"Cache-Control": "no-store"}
        )

    async def node(self, request: Request, session: Session) -> View:
        node_id = request.path_params["node_id"]
        node, mon = await run_in_threadpool(
            self.plane.read, f"reading node {node_id}", lambda c: _node(c, node_id)
        )
        return View(f"Node {node['name']}", "fleet", node_content(node, mon))


def results(query: FleetQuery, found: FleetPage) -> Html:
    now = time.time()
    rows = []
    for n in found.lines:
        where = "n/a" if n.tier is None and n.parent is None else f"{n.tier} / {n.parent or '-'}"
        rows.append(
            (
                Html(
                    f"{link(url('nodes', n.node_id), n.name)}<br><small>{escape(n.node_id)}</small>"
                ),
                Html(f"{badge(n.health)}<br><small>{escape(n.health_detail)}</small>"),
                n.device_class,
                n.active or "none",
                badge(n.updater),
                when(n.last_seen, now),
                badge(n.drift),
                where,
                backlog_view.cell(n.report),
            )
        )
    shown = f"{len(found.lines)} of {found.matching} matching nodes ({found.total} in the fleet)"
    pager = Html("")
    params: dict[str, Any] = {
        "q": query.search,
        "device_class": query.device_class,
        "seen": None if query.seen is None else query.seen.value,
        "limit": query.limit if query.limit != 50 else None,
        "backlog": backlog_view.WAITING if query.backlog else None,
    }
    links = []
    if query.after is not None:
        links.append(link(url("fleet", **params), "First page"))
    if found.next_after is not None:
        after_name, after_id = found.next_after
        links.append(
            link(url("fleet", **params, after_name=after_name, after_id=after_id), "Next page")
        )
    if links:
        pager = Html(f'<nav aria-label="Pages" class="pager">{join(links, " ")}</nav>')
    return Html(table(f"Nodes: {shown}", HEADERS, rows, "no node matches") + pager)


def _node(conn: sa.Connection, node_id: str) -> tuple[dict[str, Any], list[Any]]:
    node = fleet_rows.to_dict(fleet_rows.get(conn, node_id))
    t = tables.monitoring
    rows = [monitoring.to_row(r) for r in conn.execute(sa.select(t).where(t.c.node_id == node_id))]
    return node, rows


def _model(doc: Any) -> str:
    if not isinstance(doc, dict):
        return "none"
    return f"{doc.get('name')}:{doc.get('version')} ({doc.get('variant')}, slot {doc.get('slot')})"


def node_content(node: dict[str, Any], mon: list[Any]) -> Html:
    report = node.get("reported") or {}
    updater = report.get("updater") or {}
    health = report.get("health") or {}
    facts = pairs(
        [
            ("Node id", node["node_id"]),
            ("Device class", node["device_class"]),
            ("Labels", labels(node["labels"])),
            ("Tier / parent", f"{node['tier']} / {node['parent']}"),
            ("Agent URL", node["agent_url"] or "n/a"),
            ("Enrolled", node["enrolled_at"]),
            ("Last seen", node["last_seen"] or "never"),
            ("Desired revision", node["desired_revision"]),
            ("Reported revision", report.get("revision", "n/a")),
        ]
    )
    models = pairs(
        [
            ("Active", _model(report.get("active"))),
            ("Previous", _model(report.get("previous"))),
            ("Updater state", updater.get("state") or "n/a"),
            ("Updater outcome", updater.get("outcome") or "n/a"),
            ("Updater error", updater.get("error") or "none"),
            ("Requests (last window)", figure(health.get("requests"))),
            ("Error rate", figure(health.get("error_rate"))),
            ("p99 latency", figure(health.get("p99_ms"), " ms")),
        ]
    )
    events = [
        (
            e.get("at") or e.get("time") or "n/a",
            e.get("state") or e.get("kind") or "n/a",
            e.get("detail") or e.get("message") or "",
        )
        for e in report.get("events") or []
        if isinstance(e, dict)
    ]
    drift = [
        (
            f"{r.model}:{r.version}",
            badge(_drift(r.drifting)),
            figure(r.figures.get("drift_ratio")),
            figure(r.figures.get("samples_seen")),
            figure(r.estimated_accuracy),
            figure(r.error_rate),
        )
        for r in mon
    ]
    parts = [
        section("Facts", facts, "facts"),
        section("Models and updater", models, "models"),
        section(
            "Updater history (events in the last report)",
            table(
                "Updater events", ("At", "State", "Detail"), events, "no event in the last report"
            ),
            "history",
        ),
        section(
            "Monitoring",
            table(
                "Served versions",
                ("Version", "Drift", "Drift ratio", "Samples", "Estimated accuracy", "Error rate"),
                drift,
                "no telemetry received from this node",
            ),
            "monitoring",
        ),
        section("Metrics over the last hour", chart(node["node_id"]), "chart"),
        section("Outbox backlog", backlog_view.section_body(report), "outbox"),
        section("Capabilities", code(node["capabilities"]), "capabilities"),
    ]
    return join(parts)


def chart(node_id: str) -> Html:
    """A uPlot chart that app.js fills from the node's series (no inline script: CSP)."""
    return Html(
        f'<div class="chart" data-series="{url("nodes", node_id, "metrics.json")}" role="img" '
        'aria-label="p99 latency (ms) and requests of each metrics report, last hour">'
        '<p class="note">Loading the metrics...</p></div>'
    )


def _drift(drifting: bool | None) -> str:
    return "not watched" if drifting is None else "drifting" if drifting else "no drift"
