"""A rollout on a timeline: its own states (waves, soaks, the end) and each node's update steps.

What the control plane stores drives it: the rollout's events (``control_rollout_events``: each
move, with its time and detail) make the top lane; each node's updater transitions, which the
agent puts into its outbox as ``event`` items (``{"at", "state", "detail", "revision"}``,
docs/telemetry.md) and the control plane keeps in ``control_telemetry``, make one lane per node:
DOWNLOAD, VERIFY, STAGE, SELF_TEST, ACTIVATE, WATCH, then COMMIT or ROLLBACK. A step lasts
until the next one; IDLE is not drawn. Times are the nodes' clocks as they stamped the events.

At most ``LANES`` nodes get a lane (the page's worst-first order: failed, then waiting, then
healthy), read in one indexed query of their events within the rollout's time span. The chart
is an SVG (no script: the content security policy holds) whose every step has a ``<title>``;
the same steps are a table below it, for screen readers and for copying.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import orjson
import sqlalchemy as sa

from edgeloop.control import tables
from edgeloop.control.ui.html import Html, escape, join, url
from edgeloop.control.ui.rollout_view import RolloutView
from edgeloop.control.ui.widgets import table

LANES = 20  # nodes with a lane of their own
MAX_EVENTS = 2000  # node events read for one timeline
ENDED = frozenset({"COMPLETED", "HALTED", "ROLLED_BACK"})
# Updater states (agent/update_state.py) and rollout states (control/rollout.py): fill colours.
COLOURS = {
    "DOWNLOAD": "#8c959f",
    "VERIFY": "#6e7781",
    "STAGE": "#0969da",
    "SELF_TEST": "#8250df",
    "ACTIVATE": "#bc4c00",
    "WATCH": "#1a7f37",
    "COMMIT": "#116329",
    "ROLLBACK": "#cf222e",
    "PENDING": "#8c959f",
    "WAVE": "#0969da",
    "SOAKING": "#1a7f37",
    "PAUSED": "#9a6700",
    "COMPLETED": "#116329",
    "HALTED": "#cf222e",
    "ROLLED_BACK": "#a40e26",
}
UPDATER = frozenset(
    ("DOWNLOAD", "VERIFY", "STAGE", "SELF_TEST", "ACTIVATE", "WATCH", "COMMIT", "ROLLBACK", "IDLE")
)
ROLLOUT = frozenset(("PENDING", "WAVE", "SOAKING", "PAUSED", "COMPLETED", "HALTED", "ROLLED_BACK"))
WIDTH, LABEL_W, LANE_H, AXIS_H = 960, 170, 24, 24


@dataclass(frozen=True, slots=True)
class Step:
    start: float
    end: float
    state: str
    detail: str


@dataclass(frozen=True, slots=True)
class Lane:
    label: str
    node_id: str | None  # None: the rollout's own lane
    steps: list[Step]
    wave: int | None = None  # the node's wave, from 1


@dataclass(frozen=True, slots=True)
class Timeline:
    start: float
    end: float
    lanes: list[Lane]
    reached: int  # nodes the rollout has given a revision (all of them may have a lane)


def read(conn: sa.Connection, view: RolloutView, now: float | None = None) -> Timeline:
    """The rollout's lane and up to ``LANES`` node lanes (see the module's docstring)."""
    now = time.time() if now is None else now
    r = tables.rollouts.c
    row = conn.execute(
        sa.select(r.created_at, r.updated_at, r.state).where(r.rollout_id == view.rollout_id)
    ).one()
    start = float(row.created_at)
    end = float(row.updated_at) if row.state in ENDED else max(now, float(row.updated_at))
    e = tables.rollout_events.c
    moves = [
        (float(m.at), str(m.state), str(m.detail))
        for m in conn.execute(
            sa.select(e.at, e.state, e.detail)
            .where(e.rollout_id == view.rollout_id)
            .order_by(e.event_id)
        )
    ]
    lanes = [Lane("Rollout", None, _steps(moves, end, skip=()))]
    reached = [n for n in view.nodes if n.revision is not None]
    shown = reached[:LANES]
    found: dict[str, list[tuple[float, str, str]]] = {n.node_id: [] for n in shown}
    if shown:
        t = tables.telemetry.c
        query = (
            sa.select(t.node_id, t.created_at, t.payload)
            .where(
                t.node_id.in_(list(found)),
                t.kind == "event",
                t.created_at >= start - 1.0,
                t.created_at <= end + 1.0,
            )
            .order_by(t.node_id, t.created_at)
            .limit(MAX_EVENTS)
        )
        for item in conn.execute(query):
            doc = _json(item.payload)
            state = doc.get("state")
            if isinstance(state, str) and state in UPDATER:
                detail = str(doc.get("detail") or "")[:300]
                found[item.node_id].append((float(item.created_at), state, detail))
    for n in shown:
        steps = _steps(found[n.node_id], end, skip=("IDLE",))
        lanes.append(Lane(n.name, n.node_id, steps, n.wave + 1))
    return Timeline(start, max(end, start + 1.0), lanes, len(reached))


def _json(text: str) -> dict[str, object]:
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _steps(moves: list[tuple[float, str, str]], end: float, skip: tuple[str, ...]) -> list[Step]:
    """Each move lasts until the next (the last until ``end``, or an instant when it ended)."""
    steps = []
    for i, (at, state, detail) in enumerate(moves):
        if state in skip:
            continue
        until = moves[i + 1][0] if i + 1 < len(moves) else (at if state in ENDED else end)
        steps.append(Step(at, max(at, until), state, detail))
    return steps


def _offset(seconds: float) -> str:
    return f"+{seconds:.1f} s" if seconds < 120 else f"+{seconds / 60:.1f} min"


def svg(line: Timeline) -> Html:
    """The chart: one lane per row, a step per rectangle (its ``<title>`` says what and when)."""
    span = line.end - line.start
    plot = WIDTH - LABEL_W - 10
    height = AXIS_H + LANE_H * len(line.lanes) + 4

    def x(t: float) -> float:
        return LABEL_W + plot * min(max(t - line.start, 0.0), span) / span

    parts = []
    for k in range(5):  # the time axis: five ticks from the start
        at = line.start + span * k / 4
        anchor = "start" if k == 0 else "end" if k == 4 else "middle"
        parts.append(
            f'<text x="{x(at):.1f}" y="14" font-size="11" text-anchor="{anchor}">'
            f"{escape(_offset(at - line.start))}</text>"
            f'<line x1="{x(at):.1f}" y1="18" x2="{x(at):.1f}" y2="{height}" stroke="#d0d7de"/>'
        )
    for i, lane in enumerate(line.lanes):
        y = AXIS_H + i * LANE_H
        name = lane.label[:18] + ("" if lane.wave is None else f" · w{lane.wave}")
        parts.append(f'<text x="4" y="{y + 16}" font-size="12">{escape(name)}</text>')
        for s in lane.steps:
            left = x(s.start)
            width = max(3.0, x(s.end) - left)
            wave = "" if lane.wave is None else f" (wave {lane.wave})"
            title = f"{lane.label}{wave}: {s.state} at {_offset(s.start - line.start)}"
            title += f" for {s.end - s.start:.1f} s" if s.end > s.start else ""
            title += f": {s.detail}" if s.detail else ""
            parts.append(
                f'<rect x="{left:.1f}" y="{y + 3}" width="{width:.1f}" height="{LANE_H - 6}" '
                f'fill="{COLOURS.get(s.state, "#57606a")}"><title>{escape(title)}</title></rect>'
            )
    label = (
        f"Timeline of the rollout and {len(line.lanes) - 1} of its {line.reached} reached "
        f"node(s) over {span:.1f} s; the table below lists the same steps"
    )
    return Html(
        f'<svg class="timeline" role="img" aria-label="{escape(label)}" '
        f'viewBox="0 0 {WIDTH} {height}" width="100%" xmlns="http://www.w3.org/2000/svg">'
        + "".join(parts)
        + "</svg>"
    )


def legend() -> Html:
    """The fill colours by name (each step's ``<title>`` and the table name it too)."""
    groups = []
    for label, states in (("Node steps", UPDATER), ("Rollout", ROLLOUT)):
        items = [
            Html(
                f'<li><svg width="12" height="12" aria-hidden="true"><rect width="12" '
                f'height="12" fill="{colour}"/></svg> {escape(state.lower().replace("_", "-"))}'
                "</li>"
            )
            for state, colour in COLOURS.items()
            if state in states
        ]
        groups.append(
            Html(
                f'<ul class="legend" aria-label="{escape(label)} colours">'
                f"<li><strong>{escape(label)}:</strong></li>{join(items)}</ul>"
            )
        )
    return join(groups)


def steps_table(line: Timeline) -> Html:
    rows = []
    for lane in line.lanes:
        name: Html | str = lane.label
        if lane.node_id is not None:  # one link a lane, shared by its rows
            name = Html(f'<a href="{url("nodes", lane.node_id)}">{escape(lane.label)}</a>')
        for s in lane.steps:
            took = f"{s.end - s.start:.1f} s"
            rows.append(
                (name, lane.wave or "", s.state, _offset(s.start - line.start), took, s.detail)
            )
    return table(
        "Every step of the timeline (times from the rollout's start)",
        ("Lane", "Wave", "State", "Started", "Lasted", "Detail"),
        rows,
        "nothing recorded yet",
    )


def part(line: Timeline) -> Html:
    """The chart, its legend and, in a disclosure, the table of the same steps."""
    more = line.reached - (len(line.lanes) - 1)
    note = (
        Html(
            f'<p class="note">{more} more reached node(s) have no lane (the first {LANES} do: '
            "failed first, then waiting, then healthy).</p>"
        )
        if more > 0
        else Html("")
    )
    return join(
        [
            svg(line),
            legend(),
            note,
            Html("<details><summary>The timeline as a table</summary>"),
            steps_table(line),
            Html("</details>"),
        ]
    )
