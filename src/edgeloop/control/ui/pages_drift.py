"""Drift over time per model version: the monitoring page's charts, their JSON, and the
version's own page with the same figures as tables (control/ui/drift.py reads and bins them)."""

from __future__ import annotations

import time
from typing import Any

import orjson
import sqlalchemy as sa
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from edgeloop.control import tables
from edgeloop.control.plane import ControlPlane
from edgeloop.control.ui import drift
from edgeloop.control.ui.drift import drawable
from edgeloop.control.ui.html import Html, join, url
from edgeloop.control.ui.layout import View
from edgeloop.control.ui.sessions import Session
from edgeloop.control.ui.widgets import link, note, pairs, section
from edgeloop.core.errors import NotFoundError
from edgeloop.registry import tuf_store

MAX_CHARTS = 4  # versions charted on the monitoring page (most drifting first)


def versions(conn: sa.Connection, drifting: Any) -> list[tuple[str, str, int, int]]:
    """``(model, version, nodes, nodes drifting)`` of the monitoring table (``drifting``: the
    SQL condition of a drifting row), the versions with the most drifting nodes first."""
    t = tables.monitoring
    count = sa.func.sum(sa.case((drifting, 1), else_=0))
    q = (
        sa.select(t.c.model, t.c.model_version, sa.func.count(), count)
        .group_by(t.c.model, t.c.model_version)
        .order_by(count.desc(), t.c.model, t.c.model_version)
    )
    return [(m, v, int(n), int(d or 0)) for m, v, n, d in conn.execute(q)]


def overview(found: list[tuple[str, str, int, int]]) -> Html:
    """The monitoring page's "Drift over time" section: a chart per version (at most
    ``MAX_CHARTS``), each with a link to its figures as tables."""
    parts = [
        note(
            "Per version, from the nodes' metrics reports and alarms of the last 24 hours (the "
            "per-minute history kept as they arrive): the largest drift ratio over the nodes, "
            "the most nodes drifting in a minute, the alarms (points) and the mean accuracy."
        )
    ]
    for model, version, nodes, _ in found[:MAX_CHARTS]:
        ref = f"{model}:{version}"
        parts.append(
            Html(
                f"<h3>{link(url('monitoring', model, version), ref)} "
                f"<small>({nodes} node{'s' if nodes != 1 else ''})</small></h3>"
            )
        )
        parts.append(drift.chart(model, version))
    if len(found) > MAX_CHARTS:
        rest = ", ".join(f"{m}:{v}" for m, v, _, _ in found[MAX_CHARTS:])
        parts.append(note(f"Not charted here (each has its own page): {rest}."))
    if not found:
        parts.append(note("No node has reported a monitored version yet."))
    return section("Drift over time", join(parts), "drift-over-time")


# The charts' read: one version's newest items, found without reading its older ones (without
# it SQLite reads every item of the model in the window and sorts them). Ingest of 10,000
# items cost 0.55 s CPU without it and 0.56 s with it (docs/ui.md).
INDEX = (
    "CREATE INDEX IF NOT EXISTS ix_control_telemetry_version_time "
    "ON control_telemetry (model, model_version, created_at)"
)


def create_index(plane: ControlPlane) -> None:
    def run() -> None:
        with plane.db.write() as conn:
            conn.execute(sa.text(INDEX))

    tuf_store.guarded(plane.db, "creating the drift charts' telemetry index", run)


def _source(cols: dict[str, Any]) -> str:
    if cols["source"] == "history":
        return ", from the per-minute history (nodes counted once per minute)"
    cut = f", cut to the newest {drift.MAX_ITEMS:,} items" if cols["capped"] else ""
    return f", from the stored items themselves (few in the window){cut}"


class DriftPages:
    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        create_index(plane)

    async def _columns(self, request: Request) -> tuple[str, str, dict[str, Any]]:
        model, version = request.path_params["model"], request.path_params["version"]
        now = time.time()

        def run(conn: sa.Connection) -> dict[str, Any]:
            t = tables.monitoring
            known = sa.select(t.c.node_id).where(t.c.model == model, t.c.model_version == version)
            if conn.execute(known.limit(1)).first() is None:
                raise NotFoundError(
                    f"no node has reported model {model[:60]!r} version {version[:32]!r}",
                    hint="open a version from the monitoring page",
                )
            cols = drift.columns(conn, model, version, now)
            cols.update(chart=drift.CHART, window_s=drift.WINDOW_S)
            return cols

        cols = await run_in_threadpool(self.plane.read, f"reading drift of {model}", run)
        return model, version, cols

    async def columns(self, request: Request, session: Session) -> Response:
        """``{"t": [...], "drift_ratio_max": [...], ..., "alarm_list": [...], "chart": ...}``."""
        _, _, cols = await self._columns(request)
        if not drawable(cols):  # app.js shows the chart's "empty" words instead of a blank plot
            empty = drift.UNWATCHED if cols["reports"] else drift.CHART["empty"]
            cols.update(t=[], chart={**drift.CHART, "empty": empty})
        return Response(
            orjson.dumps(cols), media_type="application/json", headers={"Cache-Control": "no-store"}
        )

    async def page(self, request: Request, session: Session) -> View:
        model, version, cols = await self._columns(request)
        facts = pairs(
            [
                ("Version", f"{model}:{version}"),
                ("Metrics reports read", cols["reports"]),
                ("Alarms", len(cols["alarm_list"])),
                ("Window", "last 24 hours" + _source(cols)),
            ]
        )  # fmt: skip
        content = join(
            [
                section("Drift over time", join([facts, drift.chart(model, version)]), "chart"),
                section("The figures", drift.listing(cols), "figures"),
            ]
        )
        return View(f"Drift of {model}:{version}", "monitoring", content)
