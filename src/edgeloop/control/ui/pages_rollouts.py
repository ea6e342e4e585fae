"""Rollouts: the list with a deploy form, one rollout's waves, guard decisions and events, and
the actions pause / resume / rollback. Actions call the same :class:`ControlPlane` methods as
the JSON API (``POST /api/v1/deployments``, ``/rollouts/{id}/pause|resume|rollback``), with the
body checked by the same schemas."""

from __future__ import annotations

from typing import Any

import orjson
import sqlalchemy as sa
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from edgeloop.control import schemas, tables
from edgeloop.control.deployments import DeploymentSpec
from edgeloop.control.plane import ControlPlane
from edgeloop.control.rollout import State
from edgeloop.control.ui import rollout_view, security, timeline
from edgeloop.control.ui.html import Html, escape, join, url
from edgeloop.control.ui.layout import View
from edgeloop.control.ui.rollout_view import WAVE_NAMES, RolloutView
from edgeloop.control.ui.sessions import Session
from edgeloop.control.ui.widgets import badge, link, note, pairs, section, table, when
from edgeloop.core.errors import NotFoundError

MOVING = {s.value for s in (State.PENDING, State.WAVE, State.SOAKING, State.PAUSED)}
LISTED = 200  # rollouts on the list page, newest first
ACTIONS = {
    "pause": "pause this rollout",
    "resume": "resume this rollout",
    "rollback": "roll this rollout back",
}


def _form(session: Session, rid: str, action: str, label: str) -> Html:
    return Html(
        f'<form method="post" action="{url("rollouts", rid, action)}" class="inline" '
        f'data-confirm="{escape(label)}?">'
        f'<input type="hidden" name="csrf" value="{escape(session.csrf)}">'
        f'<button type="submit">{escape(label)}</button></form>'
    )


def deploy_form(session: Session, refs: list[str]) -> Html:
    if not session.may_act:
        return note("Read-only sign-in: deploying needs the admin token.")
    options = join(Html(f'<option value="{escape(r)}">{escape(r)}</option>') for r in refs)
    return Html(
        '<form method="post" action="/ui/rollouts" class="deploy" aria-label="Start a rollout">'
        f'<input type="hidden" name="csrf" value="{escape(session.csrf)}">'
        '<label for="d-name">Deployment name</label>'
        '<input id="d-name" name="name" required pattern="[A-Za-z0-9][A-Za-z0-9._-]*">'
        f'<label for="d-model">Model version</label><select id="d-model" name="model" required>'
        f"{options}</select>"
        '<label for="d-waves">Waves (comma separated: node counts or percentages)</label>'
        '<input id="d-waves" name="waves" value="1,100%">'
        '<label for="d-soak">Soak per wave (s)</label>'
        '<input id="d-soak" name="soak_s" type="number" min="0" step="any" value="30">'
        '<label for="d-watch">Watch per node (s)</label>'
        '<input id="d-watch" name="watch_s" type="number" min="0" step="any" value="30">'
        '<button type="submit">Start rollout</button></form>'
    )


class RolloutPages:
    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane

    async def list(self, request: Request, session: Session) -> View:
        rows = await run_in_threadpool(self.plane.read, "listing rollouts", _summaries)
        versions = await run_in_threadpool(self.plane.registry.list)
        content = join(
            [
                section(
                    "Rollouts",
                    table(
                        "Rollouts, newest first",
                        ("Rollout", "Deployment", "Model", "State", "Wave", "Updated"),
                        rows,
                        "no rollout yet",
                    ),
                    "all",
                ),
                section(
                    "Start a rollout", deploy_form(session, [str(v.ref) for v in versions]), "start"
                ),
            ]
        )
        return View("Rollouts", "rollouts", content)

    async def deploy(self, request: Request, session: Session) -> Response:
        form = await security.form(request)
        security.check_action(session, _text(form.get("csrf")), "start a rollout")
        waves = [w.strip() for w in (_text(form.get("waves")) or "100%").split(",") if w.strip()]
        body: dict[str, Any] = {
            "name": _text(form.get("name")),
            "model": _text(form.get("model")),
            "plan": {
                "waves": waves,
                "soak_s": _number(form.get("soak_s"), 30.0),
                "watch_s": _number(form.get("watch_s"), 30.0),
            },
        }
        checked = schemas.parse(schemas.DeploymentBody, orjson.dumps(body))
        spec = DeploymentSpec.from_dict(checked.model_dump(exclude_unset=True))
        rollout = await run_in_threadpool(self.plane.deploy, spec)
        return RedirectResponse(
            str(url("rollouts", rollout["rollout_id"])), 303, headers=security.HEADERS
        )

    async def detail(self, request: Request, session: Session) -> View:
        view, line = await self._view(request)
        return View(f"Rollout {view.name}", "rollouts", live_part(view, session, line))

    async def live(self, request: Request, session: Session) -> Html:
        """The rollout's state part alone: htmx re-reads it every 2 s while the rollout moves."""
        view, line = await self._view(request)
        return live_part(view, session, line)

    async def _view(self, request: Request) -> tuple[RolloutView, timeline.Timeline]:
        rid = request.path_params["rid"]

        def run(conn: sa.Connection) -> tuple[RolloutView, timeline.Timeline]:
            view = rollout_view.read(conn, rid)
            return view, timeline.read(conn, view)

        return await run_in_threadpool(self.plane.read, f"reading rollout {rid}", run)

    async def act(self, request: Request, session: Session) -> Response:
        rid, action = request.path_params["rid"], request.path_params["action"]
        if action not in ACTIONS:
            raise NotFoundError(
                f"rollout action {action!r} does not exist", hint=f"one of {sorted(ACTIONS)}"
            )
        form = await security.form(request)
        security.check_action(session, _text(form.get("csrf")), ACTIONS[action])
        if action == "pause":
            await run_in_threadpool(self.plane.pause, rid)
        elif action == "resume":
            await run_in_threadpool(self.plane.resume, rid)
        else:
            await run_in_threadpool(self.plane.rollback, rid, None)
        return RedirectResponse(str(url("rollouts", rid)), 303, headers=security.HEADERS)


def _summaries(conn: sa.Connection) -> list[tuple[Any, ...]]:
    """The newest ``LISTED`` rollouts as table rows, from the rollouts table alone (the API's
    full view reads every node's report: ~35 ms for one rollout of 100 nodes)."""
    t = tables.rollouts
    query = (
        sa.select(
            t.c.rollout_id, t.c.name, t.c.spec, t.c.state, t.c.wave, t.c.waves, t.c.updated_at
        )
        .order_by(t.c.created_at.desc())
        .limit(LISTED)
    )
    return [
        (
            link(url("rollouts", r.rollout_id), r.rollout_id),
            r.name,
            orjson.loads(r.spec).get("model", "n/a"),
            badge(r.state),
            f"{r.wave + 1} of {len(orjson.loads(r.waves))}",
            when(r.updated_at),
        )
        for r in conn.execute(query)
    ]


def live_part(view: RolloutView, session: Session, line: timeline.Timeline | None = None) -> Html:
    rid, state = view.rollout_id, view.state
    poll = (
        f' hx-get="{url("rollouts", rid, "live")}" hx-trigger="every 2s" hx-swap="outerHTML"'
        if state in MOVING
        else ""
    )
    facts = pairs(
        [
            ("Rollout id", rid),
            ("Deployment", view.name),
            ("Model", view.model),
            ("State", badge(state)),
            ("Wave", f"{view.wave + 1} of {len(view.waves)}"),
            ("Nodes", view.total_nodes),
        ]
    )
    if session.may_act:
        buttons = [_form(session, rid, a, a.capitalize()) for a in ("pause", "resume", "rollback")]
        actions = Html(
            f'<div class="actions" role="group" aria-label="Rollout actions">{join(buttons)}</div>'
        )
    else:
        actions = note("Read-only sign-in: pause, resume and rollback need the admin token.")
    waves = [_wave(view, i, ids) for i, ids in enumerate(view.waves)]
    node_rows = [
        (
            link(url("nodes", n.node_id), n.name),
            n.wave + 1,
            n.ref or "n/a",
            "n/a" if n.revision is None else n.revision,
            badge(n.verdict),
            n.detail,
        )
        for n in view.nodes
    ]
    shown = f"{len(view.nodes)} of {view.total_nodes} nodes, failed first, then waiting"
    events = [(at, badge(st), detail) for at, st, detail in reversed(view.events)]
    return Html(
        f'<div id="rollout-live" aria-live="polite"{poll}>'
        + join(
            [
                facts,
                actions,
                section("Waves", Html(f'<ol class="waves">{join(waves)}</ol>'), "waves"),
                section("Timeline", timeline.part(line), "timeline") if line else Html(""),
                section(
                    "Guard decisions per node",
                    table(
                        f"Each node's check with its figures: {shown}",
                        ("Node", "Wave", "Version", "Revision", "Verdict", "Figures"),
                        node_rows,
                    ),
                    "nodes",
                ),
                section(
                    "Events",
                    table("Events, newest first", ("At", "State", "Detail"), events),
                    "events",
                ),
            ]
        )
        + "</div>"
    )


def _wave(view: RolloutView, i: int, ids: list[str]) -> Html:
    """One wave: where it stands, its verdict counts, and its nodes' names when few."""
    done = i < view.wave or view.state == State.COMPLETED.value
    stopped = view.state in (State.HALTED.value, State.ROLLED_BACK.value)
    here = "stopped" if stopped else "current"
    mark = "done" if done else here if i == view.wave else "not started" if stopped else "next"
    counts = ", ".join(f"{k} {v}" for k, v in sorted(view.counts[i].items())) or "none judged"
    names = ", ".join(view.names.get(n, n) for n in ids[:WAVE_NAMES])
    more = f" and {len(ids) - WAVE_NAMES} more" if len(ids) > WAVE_NAMES else ""
    return Html(
        f'<li class="wave w-{mark.replace(" ", "-")}"><strong>Wave {i + 1}</strong> '
        f"({mark}, {len(ids)} "
        f"node(s): {escape(counts)}): {escape(names + more)}</li>"
    )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _number(value: Any, default: float) -> float | str:
    text = _text(value)
    if not text:
        return default
    try:
        return float(text)
    except ValueError:
        return text  # the schema names the bad field
