"""Models (versions with manifest and measurements), monitoring (drift, alerts), the routes of
the experiment, federated-task and job pages, and the pages of features not built yet."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.routing import BaseRoute, Route

from edgeloop.control import alert_store, monitoring, tables
from edgeloop.control.plane import ControlPlane
from edgeloop.control.ui import drift, lineage, pages_drift, pareto
from edgeloop.control.ui.html import Html, join, render, url
from edgeloop.control.ui.layout import SECTIONS, View
from edgeloop.control.ui.sessions import Session
from edgeloop.control.ui.widgets import badge, code, figure, link, note, pairs, section, table, when
from edgeloop.core.errors import NotFoundError
from edgeloop.core.types import ModelRef
from edgeloop.registry.store import ModelVersion

DRIFT_ROWS = 200  # the monitoring page's drift table; a node's own page shows all its rows
# Pages of features the dashboard does not show yet (none now: experiments, federated tasks and
# retraining jobs have their own pages, see :func:`work_routes`); an unknown name is a 404.
PLANNED: dict[str, tuple[str, str]] = {}


def work_routes(plane: ControlPlane, guarded: Callable[[Any], Any]) -> list[BaseRoute]:
    """The experiments, federated-task and retraining-job pages (control/ui/pages_*.py)."""
    from edgeloop.control.ui.pages_drift import DriftPages
    from edgeloop.control.ui.pages_experiments import ExperimentPages
    from edgeloop.control.ui.pages_federated import FederatedPages
    from edgeloop.control.ui.pages_jobs import JobPages

    exps, fl, jobs, g = ExperimentPages(plane), FederatedPages(plane), JobPages(plane), guarded
    drifts = DriftPages(plane)
    return [
        Route("/monitoring/{model}/{version}", g(drifts.page), methods=["GET"]),
        Route("/monitoring/{model}/{version}/drift.json", g(drifts.columns), methods=["GET"]),
        Route("/experiments", g(exps.list), methods=["GET"]),
        Route("/experiments/{eid}", g(exps.detail), methods=["GET"]),
        Route("/federated", g(fl.list), methods=["GET"]),
        Route("/federated/{tid}", g(fl.detail), methods=["GET"]),
        Route("/federated/{tid}/rounds.json", g(fl.rounds), methods=["GET"]),
        Route("/jobs", g(jobs.list), methods=["GET"]),
        Route("/jobs/{job_id}", g(jobs.detail), methods=["GET"]),
        Route("/jobs/{job_id}/cancel", g(jobs.cancel), methods=["POST"]),
    ]


class RegistryPages:
    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane

    async def models(self, request: Request, session: Session) -> View:
        versions = await run_in_threadpool(self.plane.registry.list)
        rows = []
        for v in versions:
            m = v.manifest
            best = m.measurements[0] if m.measurements else None
            rows.append(
                (
                    link(url("models", v.name, v.version), str(v.ref)),
                    m.format,
                    f"{v.size_bytes:,} B",
                    figure(None if best is None else best.accuracy),
                    figure(None if best is None else best.latency_ms.p50, " ms"),
                    str(m.parent) if m.parent else "none",
                    v.created_at.isoformat(timespec="seconds"),
                )
            )
        body = table(
            "Registered versions",
            ("Version", "Format", "Size", "Accuracy", "Latency p50", "Parent", "Published"),
            rows,
            "no model published yet",
        )
        return View("Models", "models", body)

    async def version(self, request: Request, session: Session) -> View:
        name, text = request.path_params["name"], request.path_params["version"]
        if not text.isdigit():
            raise NotFoundError(
                f"model version {text[:40]!r} is not a number",
                hint="open a version from the models page",
            )
        ref = ModelRef(name, int(text))
        v = await run_in_threadpool(self.plane.registry.show, ref)
        everything = await run_in_threadpool(self.plane.registry.list)
        m = v.manifest
        facts = pairs(
            [
                ("Reference", str(v.ref)),
                ("Artifact sha256", v.artifact_sha256),
                ("Size", f"{v.size_bytes:,} bytes"),
                ("Format", m.format),
                ("Parent", str(m.parent) if m.parent else "none"),
                ("Data set", m.dataset or "n/a"),
                ("Published", v.created_at.isoformat(timespec="seconds")),
            ]
        )
        rows = [
            (
                x.engine,
                x.provider,
                x.batch_size,
                x.runs,
                figure(x.latency_ms.p50, " ms"),
                figure(x.latency_ms.p99, " ms"),
                figure(x.throughput_per_s, "/s"),
                figure(x.accuracy),
                x.accuracy_split or "n/a",
                figure(x.peak_rss_mb, " MB"),
                figure(x.power_w, " W") if x.power_w is not None else f"n/a ({x.power_source})",
                x.cpu,
            )
            for x in m.measurements
        ]
        measured = table(
            "Measurements",
            (
                "Engine",
                "Provider",
                "Batch",
                "Runs",
                "p50",
                "p99",
                "Throughput",
                "Accuracy",
                "Split",
                "Peak RSS",
                "Power",
                "CPU",
            ),
            rows,
            "no measurement recorded",
        )
        content = join(
            [
                section("Version", facts, "version"),
                section("Measurements", measured, "measurements"),
                section("Lineage", _lineage(everything, str(v.ref)), "lineage"),
                section("Variants (Pareto plot)", _variants(everything, str(v.ref)), "variants"),
                section("Manifest", code(m.to_dict()), "manifest"),
            ]
        )
        return View(f"Model {v.ref}", "models", content)

    async def monitoring(self, request: Request, session: Session) -> View:
        rows, drifting, total, alerts, charted = await run_in_threadpool(
            self.plane.read, "reading monitoring", _monitoring
        )
        drift = [_drift_row(r) for r in rows]
        alert_rows = [
            (
                badge(a.state.value),
                a.rule,
                a.kind.value,
                a.subject,
                when(a.first_seen),
                when(a.last_seen),
                ", ".join(f"{k}={v}" for k, v in a.figures.items()),
            )
            for a in alerts
        ]
        alert_heads = ("State", "Rule", "Kind", "Subject", "First seen", "Last seen", "Figures")
        drift_heads = (
            "Node",
            "Version",
            "Drift",
            "Drift ratio",
            "Samples",
            "Estimated accuracy",
            "Error rate",
            "Last heard",
        )
        shown = (
            f"{drifting} of {total} node/version views drifting; showing {len(rows)}, "
            "drifting first (a node's page shows all of its own)."
        )
        content = join(
            [
                section(
                    "Alerts",
                    table("Alerts, firing first", alert_heads, alert_rows, "no alert"),
                    "alerts",
                ),
                section(
                    "Drift per node and version",
                    join(
                        [
                            note(shown),
                            table(
                                "Each node's view of each version",
                                drift_heads,
                                drift,
                                "no telemetry received yet",
                            ),
                        ]
                    ),
                    "drift",
                ),
                pages_drift.overview(charted),
            ]
        )
        return View("Monitoring", "monitoring", content)


def _drift_row(r: monitoring.FleetRow) -> tuple[Any, ...]:
    word = "not watched" if r.drifting is None else "drifting" if r.drifting else "no drift"
    heard = max(x for x in (r.metrics_at, r.event_at, 0.0) if x is not None) or None
    return (
        link(url("nodes", r.node_id), r.node_id),
        f"{r.model}:{r.version}",
        badge(word),
        figure(drift.ratio(r.figures)),  # the largest of the checks (input, prediction...)
        figure(r.figures.get("samples_seen")),
        figure(r.estimated_accuracy),
        figure(r.error_rate),
        when(heard),
    )


def _lineage(versions: list[ModelVersion], ref: str) -> Html:
    graph = lineage.build(versions, ref)
    shown = len(graph.nodes)
    parts = [
        note(
            "Its ancestors and descendants in the registry (parent links); each edge says what "
            "made the child, from its recipe. Each box is a link to that version."
        ),
        lineage.svg(graph, f"Lineage of {ref}: {shown} boxes, {len(graph.edges)} edges"),
        lineage.listing(graph),
    ]
    if graph.left_out:
        parts.append(note(f"{graph.left_out} more descendants are not drawn or listed."))
    return join(parts)


def _variants(versions: list[ModelVersion], ref: str) -> Html:
    found = [pareto.variant(v) for v in pareto.family(versions, ref)]
    plotted = sum(1 for x in found if x.point is not None)
    return join(
        [
            note(
                "The versions of this lineage tree by the registry's measurement of each: "
                "latency p50 against accuracy, the point's area the artifact's size. Filled: on "
                "the Pareto front (no other variant is as accurate, faster and smaller at once); "
                "ringed: chosen by a search under its budget. A figure not measured is n/a and "
                "its variant is left off the plot."
            ),
            pareto.plot(found, ref, f"Variants of {ref}: {plotted} of {len(found)} plotted"),
            pareto.listing(found),
        ]
    )


def _monitoring(
    conn: sa.Connection,
) -> tuple[list[monitoring.FleetRow], int, int, list[Any], list[tuple[str, str, int, int]]]:
    """At most ``DRIFT_ROWS`` monitoring rows, drifting ones first (decided in SQL as
    :func:`monitoring.to_row` does: the stored snapshot says so, or a drift event came after
    it), the number drifting, the number of rows, the alerts, and the versions to chart."""
    t = tables.monitoring
    drifting = sa.or_(
        t.c.snapshot.like('%"drifting":true%'),
        sa.and_(
            t.c.drift_event_at.is_not(None),
            sa.or_(t.c.metrics_at.is_(None), t.c.drift_event_at > t.c.metrics_at),
        ),
    )
    q = sa.select(t).order_by(sa.case((drifting, 0), else_=1), t.c.model, t.c.node_id)
    rows = [monitoring.to_row(r) for r in conn.execute(q.limit(DRIFT_ROWS))]
    # The counts per version (one scan): the drift charts' order, and the page's totals.
    charted = pages_drift.versions(conn, drifting)
    total, found = sum(n for _, _, n, _ in charted), sum(d for _, _, _, d in charted)
    return rows, found, total, alert_store.read(conn), charted


async def planned(request: Request, session: Session) -> View:
    key = request.path_params["planned"]
    if key not in PLANNED:
        known = [k for k, _ in SECTIONS]
        raise NotFoundError(
            f"there is no dashboard page {key[:60]!r}", hint=f"the pages are {known}"
        )
    what, detail = PLANNED[key]
    title = dict(SECTIONS)[key]
    return View(title, key, render("planned.html", what=what, detail=detail))
