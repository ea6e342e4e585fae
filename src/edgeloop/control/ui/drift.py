"""Drift over time for one model version: the monitoring page's charts and their table.

Two sources, one shape of columns. At fleet scale the chart reads the version's history the
control plane keeps as telemetry arrives (``control_drift_history``, one row per minute:
control/drift_history.py): :func:`read_history` sums the window's rows (at most 1,440 in
24 h) into at most ``MAX_BINS`` bins in SQL and :func:`series_of_history` (pure) lays them
out: per bin the largest drift ratio, the most nodes drifting and reporting in any one minute
of the bin (a node counts once per minute), the mean windowed and estimated accuracy over the
reports that had one, and the alarms (``control_drift_alarms``). A version with few items in
the window (``RAW_MAX`` reports and alarms at most, by the history's counts) is binned from its
stored items instead, to the second: :func:`read` takes the newest ``MAX_ITEMS`` ``metrics``
and ``event`` items of the version (read back with :func:`edgeloop.control.monitoring.fold`)
and :func:`series` (pure) bins them, nodes counted once per bin. So is a version whose items
came before the history existed. A bin without a figure holds null (uPlot leaves a gap).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from edgeloop.control import drift_history, monitoring, tables
from edgeloop.control.ui.html import Html, escape, url
from edgeloop.control.ui.widgets import figure, link, table

WINDOW_S = 24 * 3600
MAX_ITEMS = 1_000  # newest items a chart reads: its time grows with them (docs/ui.md)
MAX_BINS = 120
RAW_MAX = 200  # reports and alarms in the window up to which the items are binned themselves
ALARM_LIST = 500  # newest alarms listed from the history
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


ratio = drift_history.ratio


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


@dataclass(frozen=True, slots=True)
class Bins:
    """How a window of history minutes is cut into chart bins."""

    start: float  # the first minute's start
    width: float  # seconds per chart bin (a minute at least)
    n: int


def bins_of(first: float, last: float, most: int = MAX_BINS) -> Bins:
    """At most ``most`` equal bins from the minute starting at ``first`` to the one at ``last``."""
    step = drift_history.BIN_S
    span = last + step - first
    n = max(1, min(most, round(span / step)))
    return Bins(first, span / n, n)


def _bucket(dialect: str, cut: Bins) -> Any:
    at = (tables.drift_history.c.bin_start - cut.start) / cut.width
    if dialect == "postgresql":
        return sa.cast(sa.func.floor(at), sa.Integer)
    return sa.cast(at, sa.Integer)  # SQLite truncates: floor for what is >= 0


def read_history(
    conn: sa.Connection, model: str, version: str, now: float
) -> tuple[Bins | None, list[Any], int, int]:
    """The version's history in the window, summed per chart bin in SQL (at most ``MAX_BINS``
    rows; None and [] when it has none), and its reports and alarms there."""
    h = tables.drift_history
    mine = (h.c.model == model, h.c.model_version == version,
            h.c.bin_start >= drift_history._bin(now - WINDOW_S))  # fmt: skip
    first, last, reports, alarms = conn.execute(
        sa.select(
            sa.func.min(h.c.bin_start),
            sa.func.max(h.c.bin_start),
            sa.func.sum(h.c.reports),
            sa.func.sum(h.c.alarms),
        ).where(*mine)
    ).one()
    if first is None:
        return None, [], 0, 0
    cut = bins_of(first, last)
    bucket = _bucket(conn.dialect.name, cut).label("i")
    q = sa.select(
        bucket,
        sa.func.max(h.c.drift_ratio_max).label("drift_ratio_max"),
        sa.func.max(sa.case((h.c.reports_watched > 0, h.c.nodes_drifting))).label("drifting"),
        sa.func.max(sa.case((h.c.reports > 0, h.c.nodes_reporting))).label("reporting"),
        sa.func.sum(h.c.alarms).label("alarms"),
        sa.func.sum(h.c.windowed_sum).label("windowed_sum"),
        sa.func.sum(h.c.windowed_count).label("windowed_count"),
        sa.func.sum(h.c.estimated_sum).label("estimated_sum"),
        sa.func.sum(h.c.estimated_count).label("estimated_count"),
    )
    rows = list(conn.execute(q.where(*mine).group_by(bucket)))
    return cut, rows, int(reports or 0), int(alarms or 0)


def read_alarms(conn: sa.Connection, model: str, version: str, now: float) -> list[dict[str, Any]]:
    """The version's newest ``ALARM_LIST`` alarms of the window (the history's), oldest first."""
    a = tables.drift_alarms
    found = conn.execute(
        sa.select(a.c.at, a.c.node_id, a.c.type)
        .where(a.c.model == model, a.c.model_version == version, a.c.at >= now - WINDOW_S)
        .order_by(a.c.at.desc())
        .limit(ALARM_LIST)
    )
    return [{"at": at, "node_id": node, "type": kind} for at, node, kind in found][::-1]


def series_of_history(
    cut: Bins | None, groups: Iterable[Any], alarm_list: list[dict[str, Any]]
) -> dict[str, Any]:
    """:func:`series`' columns from the history summed per chart bin (``i``: the bin's index;
    nodes drifting / reporting are the most in any one minute of the bin). Pure."""
    cols: dict[str, Any] = {"t": [], **{c: [] for c in COLUMNS}, "alarm_list": alarm_list}
    if cut is None:
        return cols
    by: dict[int, Any] = {min(cut.n - 1, int(g.i)): g for g in groups}
    for i in range(cut.n):
        g = by.get(i)
        cols["t"].append(round(cut.start + i * cut.width, 3))
        if g is None:
            for c in COLUMNS:
                cols[c].append(None)
            continue
        cols["drift_ratio_max"].append(g.drift_ratio_max)
        cols["nodes_drifting"].append(g.drifting)
        cols["nodes_reporting"].append(g.reporting)
        cols["alarms"].append(g.alarms or None)
        cols["windowed_accuracy"].append(
            g.windowed_sum / g.windowed_count if g.windowed_count else None
        )
        cols["estimated_accuracy"].append(
            g.estimated_sum / g.estimated_count if g.estimated_count else None
        )
    return cols


def columns(conn: sa.Connection, model: str, version: str, now: float) -> dict[str, Any]:
    """The chart's columns from the history, or from the items themselves when the window
    holds few (see the module's docstring), with ``reports``, ``capped`` and ``source``."""
    cut, groups, reports, alarms = read_history(conn, model, version, now)
    if reports + alarms > RAW_MAX:
        cols = series_of_history(cut, groups, read_alarms(conn, model, version, now))
        cols.update(reports=reports, capped=False, source="history")
        return cols
    snaps, marks, capped = read(conn, model, version, now)
    cols = series(snaps, marks)
    cols.update(reports=len(snaps), capped=capped, source="items")
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
