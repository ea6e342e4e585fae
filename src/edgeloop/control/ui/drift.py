"""Drift over time for one model version: the monitoring page's charts and their table.

The source is the telemetry the control plane stores (``control_telemetry``): the nodes'
``metrics`` items (each carries, per served model, the monitor's drift ratios, drifting flag and
windowed / estimated accuracy) and their ``event`` items (a drift, quality or degradation alarm),
read back with :func:`edgeloop.control.monitoring.fold` as the monitoring table is built from
them. :func:`read` takes the newest ``MAX_ITEMS`` items whose model and version columns name the
version (a node's served model: a second model watched beside it in the same item is not in
those columns) from the last ``WINDOW_S`` seconds; :func:`series` (pure) puts them in at most
``MAX_BINS`` equal time bins: per bin the largest drift ratio (score / threshold, > 1 is
drifting) over the nodes and checks, the nodes that said they were drifting, the nodes that
reported, the mean windowed (labelled) and estimated accuracy over the nodes that had one, and
the alarms. A bin without a figure holds null (uPlot leaves a gap); nothing is filled in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from edgeloop.control import monitoring, tables
from edgeloop.control.ui.html import Html, escape, url
from edgeloop.control.ui.widgets import figure, link, table

WINDOW_S = 24 * 3600
MAX_ITEMS = 1_000  # newest items a chart reads: its time grows with them (docs/ui.md)
MAX_BINS = 120
SERIES: tuple[tuple[str, ...], ...] = (
    ("drift_ratio_max", "largest drift ratio (>1: drifting)", "#a40e26", "ratio"),
    ("nodes_drifting", "nodes drifting", "#7a4a00", "nodes"),
    ("alarms", "alarms (drift, quality, degradation)", "#1b1f24", "nodes", "points"),
    ("windowed_accuracy", "windowed accuracy (labelled)", "#0b5cad", "accuracy"),
    ("estimated_accuracy", "estimated accuracy", "#116329", "accuracy"),
)
CHART: dict[str, Any] = {
    "time": True,
    "spanGaps": True,  # a line joins the bins with reports (a bin without one is null)
    "empty": "No metrics report or alarm of this version in the last 24 hours.",
    "series": [list(x) for x in SERIES],
}
UNWATCHED = (
    "This version's reports carry no drift or accuracy figure (it is served without a "
    "reference profile, so it is not watched) and no alarm came."
)
COLUMNS = ("drift_ratio_max", "nodes_drifting", "nodes_reporting", "alarms",
           "windowed_accuracy", "estimated_accuracy")  # fmt: skip


def read(
    conn: sa.Connection, model: str, version: str, now: float
) -> tuple[list[monitoring.Snapshot], list[monitoring.Mark], bool]:
    """The version's snapshots and alarms in the window, oldest first, and whether the
    ``MAX_ITEMS`` cap cut older items off."""
    t = tables.telemetry
    q = (
        sa.select(t.c.node_id, t.c.kind, t.c.content_type, t.c.payload, t.c.created_at)
        .where(t.c.model == model, t.c.model_version == version)
        .where(t.c.kind.in_(("metrics", "event")), t.c.created_at >= now - WINDOW_S)
        .order_by(t.c.created_at.desc())
        .limit(MAX_ITEMS + 1)
    )
    rows = conn.execute(q).mappings().all()
    capped = len(rows) > MAX_ITEMS
    by_node: dict[str, list[Any]] = {}
    for row in reversed(rows[:MAX_ITEMS]):
        by_node.setdefault(row["node_id"], []).append(row)
    snaps: list[monitoring.Snapshot] = []
    marks: list[monitoring.Mark] = []
    for node_id, items in by_node.items():
        for u in monitoring.fold(node_id, items):
            if (u.model, u.version) != (model, version):
                continue
            (snaps if isinstance(u, monitoring.Snapshot) else marks).append(u)  # type: ignore[arg-type]
    return sorted(snaps, key=lambda s: s.at), sorted(marks, key=lambda m: m.at), capped


def ratio(figures: Mapping[str, Any]) -> float | None:
    """The largest drift ratio of one snapshot (over the input, prediction and confidence
    checks), or None when it carries none (a version watched without a profile)."""
    found = figures.get("drift_ratio")
    if not isinstance(found, Mapping):
        return None
    values = [float(v) for v in found.values() if isinstance(v, int | float)]
    return max(values) if values else None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _figures(group: list[monitoring.Snapshot], key: str) -> list[float]:
    return [x for s in group if (x := _number(s.figures.get(key))) is not None]


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def series(
    snaps: Iterable[monitoring.Snapshot], marks: Iterable[monitoring.Mark], bins: int = MAX_BINS
) -> dict[str, Any]:
    """The chart's columns: ``t`` (each bin's start, unix s) and :data:`COLUMNS`, one value per
    bin (null where no node gave that figure in the bin; ``alarms`` null where none fired), and
    ``alarm_list``: each alarm's time, node and type. Pure."""
    snaps, marks = list(snaps), list(marks)
    times = [s.at for s in snaps] + [m.at for m in marks]
    cols: dict[str, Any] = {"t": [], **{c: [] for c in COLUMNS}}
    cols["alarm_list"] = [{"at": m.at, "node_id": m.node_id, "type": m.type.value} for m in marks]
    if not times:
        return cols
    start, end = min(times), max(times)
    n = max(1, min(bins, int(end - start) + 1))  # bins of one second at least
    width = (end - start) / n or 1.0

    def index(at: float) -> int:
        return min(n - 1, int((at - start) / width))

    per: list[list[monitoring.Snapshot]] = [[] for _ in range(n)]
    alarms = [0] * n
    for s in snaps:
        per[index(s.at)].append(s)
    for m in marks:
        alarms[index(m.at)] += 1
    for i, group in enumerate(per):
        ratios = [r for s in group if (r := ratio(s.figures)) is not None]
        watched = [s for s in group if s.figures.get("drifting") is not None]
        windowed = _figures(group, "windowed_accuracy")
        estimated = _figures(group, "estimated_accuracy")
        cols["t"].append(round(start + i * width, 3))
        cols["drift_ratio_max"].append(max(ratios) if ratios else None)
        cols["nodes_drifting"].append(
            len({s.node_id for s in watched if s.figures.get("drifting")}) if watched else None
        )
        cols["nodes_reporting"].append(len({s.node_id for s in group}) if group else None)
        cols["alarms"].append(alarms[i] or None)
        cols["windowed_accuracy"].append(_mean(windowed))
        cols["estimated_accuracy"].append(_mean(estimated))
    return cols


def drawable(cols: Mapping[str, Any]) -> bool:
    """Whether any charted column holds a figure (a version that is not watched has none)."""
    return any(x is not None for s in SERIES for x in cols[s[0]])


def chart(model: str, version: str) -> Html:
    """A uPlot chart that app.js fills from the version's drift columns (no inline script)."""
    return Html(
        f'<div class="chart" data-series="{url("monitoring", model, version, "drift.json")}" '
        f'role="img" aria-label="{escape(f"{model}:{version}")}: largest drift ratio, nodes '
        "drifting, alarms and accuracy over the last 24 hours (the table link below has the "
        'figures)"><p class="note">Loading the drift figures...</p></div>'
    )


def _stamp(t: float) -> Html:
    text = datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")
    return Html(f'<time datetime="{escape(text)}">{escape(text)}</time>')


def listing(cols: Mapping[str, Any]) -> Html:
    """The chart's bins as a table (rows without any report left out), then the alarms."""
    rows = [
        (
            _stamp(t),
            figure(cols["drift_ratio_max"][i]),
            figure(cols["nodes_drifting"][i]),
            figure(cols["nodes_reporting"][i]),
            cols["alarms"][i] or 0,
            figure(cols["windowed_accuracy"][i]),
            figure(cols["estimated_accuracy"][i]),
        )
        for i, t in enumerate(cols["t"])
        if cols["nodes_reporting"][i] is not None or cols["alarms"][i]
    ]
    bins = table(
        "Drift over time, per time bin (n/a: no node gave that figure)",
        (
            "Bin start (UTC)",
            "Largest drift ratio",
            "Nodes drifting",
            "Nodes reporting",
            "Alarms",
            "Windowed accuracy",
            "Estimated accuracy",
        ),
        rows,
        "no metrics report or alarm in the last 24 hours",
    )
    alarms = table(
        "Alarms, oldest first",
        ("Time (UTC)", "Node", "Type"),
        [
            (_stamp(a["at"]), link(url("nodes", a["node_id"]), a["node_id"]), a["type"])
            for a in cols["alarm_list"]
        ],
        "no alarm in the last 24 hours",
    )
    return Html(bins + alarms)
