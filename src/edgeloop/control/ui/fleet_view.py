"""The fleet page's read: one page of nodes, filtered, by keyset, with each node's state.

Nodes are paged by ``(name, node_id)`` on the index :func:`~.sessions.create_table` makes,
``WHERE (name, node_id) > (last name, last id) ... LIMIT n``: the 200th page costs what the
first does (an OFFSET would read every row before it). Search (substring of the name or id),
device class and "seen" are SQL conditions; a page's drift state is one indexed read of the
monitoring rows of its nodes. Health is worked out from each node's last report (pure:
:func:`health`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson
import sqlalchemy as sa

from edgeloop.control import monitoring, tables
from edgeloop.control.ui import backlog as backlog_view
from edgeloop.core.errors import ConfigError

# A node reports at every poll (5 s by default): a minute without one is 12 missed polls.
SILENT_S = 60.0
PAGE_SIZES = (25, 50, 100, 200)


class Seen(StrEnum):
    ONLINE = "online"  # reported within SILENT_S
    SILENT = "silent"  # reported once, not within SILENT_S
    NEVER = "never"  # enrolled, never reported


@dataclass(frozen=True, slots=True)
class FleetQuery:
    search: str | None = None
    device_class: str | None = None
    seen: Seen | None = None
    after: tuple[str, str] | None = None  # (name, node_id) of the previous page's last node
    limit: int = 50
    backlog: bool = False  # only nodes whose last report says their outbox holds rows

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> FleetQuery:
        """The query of ``/ui/fleet?q=&device_class=&seen=&after_name=&after_id=&limit=``.

        Raises:
            ConfigError: an unknown ``seen`` or ``limit`` (HTTP 400), naming the allowed ones.
        """
        seen = params.get("seen") or None
        if seen is not None and seen not in set(Seen):
            raise ConfigError(
                f"seen {seen[:40]!r} is not known; expected one of {[s.value for s in Seen]}",
                hint="leave it empty for every node",
            )
        limit = params.get("limit") or "50"
        if limit not in {str(n) for n in PAGE_SIZES}:
            raise ConfigError(
                f"limit {limit[:12]!r} is not offered; expected one of {list(PAGE_SIZES)}"
            )
        name, node_id = params.get("after_name"), params.get("after_id")
        return cls(
            (params.get("q") or "").strip()[:128] or None,
            (params.get("device_class") or None),
            None if seen is None else Seen(seen),
            (name, node_id) if name is not None and node_id else None,
            int(limit),
            params.get("backlog") == backlog_view.WAITING,
        )


@dataclass(frozen=True, slots=True)
class NodeLine:
    """One node as the fleet page shows it."""

    node_id: str
    name: str
    health: str
    health_detail: str
    device_class: str
    active: str | None  # name:version (variant) the node serves, from its report
    updater: str | None
    last_seen: float | None
    drift: str
    tier: int | None
    parent: str | None
    report: dict[str, Any] | None = None  # the last report (the outbox backlog cell reads it)


@dataclass(frozen=True, slots=True)
class FleetPage:
    lines: list[NodeLine]
    matching: int
    total: int
    next_after: tuple[str, str] | None


def health(
    report: Mapping[str, Any] | None, last_seen: float | None, now: float
) -> tuple[str, str]:
    """``(word, why)`` of a node from its last report and when it came."""
    if last_seen is None or report is None:
        return "never reported", "no report has reached the control plane"
    age = now - last_seen
    if age > SILENT_S:
        return "silent", f"last report {age:.0f} s ago (over {SILENT_S:.0f} s)"
    updater = report.get("updater") or {}
    if updater.get("error"):
        return "failing", str(updater["error"])[:300]
    figures = report.get("health") or {}
    rate = figures.get("error_rate")
    if isinstance(rate, int | float) and rate > 0:
        return "errors", f"{rate:.1%} of {figures.get('requests')} requests failed"
    if updater.get("state") not in (None, "IDLE"):
        return "updating", f"updater {updater.get('state')}"
    return "ok", "reporting, no errors"


def _active(report: Mapping[str, Any] | None) -> str | None:
    active = (report or {}).get("active")
    if not isinstance(active, Mapping):
        return None
    text = f"{active.get('name')}:{active.get('version')}"
    variant = active.get("variant")
    return f"{text} ({variant})" if variant and variant != text else text


def _where(query: FleetQuery, now: float) -> list[Any]:
    n = tables.nodes.c
    conds: list[Any] = []
    if query.search:
        like = "%" + query.search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        like += "%"
        conds.append(sa.or_(n.name.like(like, escape="\\"), n.node_id.like(like, escape="\\")))
    if query.device_class:
        conds.append(n.device_class == query.device_class)
    if query.seen is Seen.NEVER:
        conds.append(n.last_seen.is_(None))
    elif query.seen is Seen.ONLINE:
        conds.append(n.last_seen >= now - SILENT_S)
    elif query.seen is Seen.SILENT:
        conds.append(n.last_seen < now - SILENT_S)
    return conds


def read(conn: sa.Connection, query: FleetQuery, now: float | None = None) -> FleetPage:
    """One page of the fleet (see the module's docstring)."""
    now = time.time() if now is None else now
    n = tables.nodes.c
    conds = _where(query, now)
    if query.backlog:
        conds.append(backlog_view.waiting(conn.dialect.name))
    rows_q = sa.select(
        n.node_id, n.name, n.device_class, n.last_seen, n.reported, n.tier, n.parent
    ).order_by(n.name, n.node_id)
    if conds:
        rows_q = rows_q.where(*conds)
    if query.after is not None:
        rows_q = rows_q.where(sa.tuple_(n.name, n.node_id) > sa.tuple_(*query.after))
    rows = list(conn.execute(rows_q.limit(query.limit + 1)))
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    count = sa.select(sa.func.count()).select_from(tables.nodes)
    matching = conn.execute(count.where(*conds) if conds else count).scalar_one()
    total = matching if not conds else conn.execute(count).scalar_one()
    drift = drift_words(conn, [r.node_id for r in rows])
    lines = []
    for r in rows:
        report = None if r.reported is None else orjson.loads(r.reported)
        word, why = health(report, r.last_seen, now)
        updater = (report or {}).get("updater") or {}
        lines.append(
            NodeLine(
                r.node_id,
                r.name,
                word,
                why,
                r.device_class,
                _active(report),
                updater.get("state"),
                r.last_seen,
                drift.get(r.node_id, "no data"),
                r.tier,
                r.parent,
                report,
            )
        )
    last = (rows[-1].name, rows[-1].node_id) if more and rows else None
    return FleetPage(lines, int(matching), int(total), last)


def drift_words(conn: sa.Connection, node_ids: list[str]) -> dict[str, str]:
    """Each node's drift state over the versions it serves: ``drifting (name:version)``,
    ``no drift``, ``not watched`` (no profile), from the fleet-monitoring table."""
    if not node_ids:
        return {}
    t = tables.monitoring
    found: dict[str, list[monitoring.FleetRow]] = {}
    for r in conn.execute(sa.select(t).where(t.c.node_id.in_(node_ids))):
        found.setdefault(r.node_id, []).append(monitoring.to_row(r))
    words = {}
    for node_id, rows in found.items():
        drifting = [f"{r.model}:{r.version}" for r in rows if r.drifting]
        if drifting:
            words[node_id] = "drifting (" + ", ".join(drifting) + ")"
        elif any(r.drifting is False for r in rows):
            words[node_id] = "no drift"
        else:
            words[node_id] = "not watched"
    return words


def device_classes(conn: sa.Connection) -> list[str]:
    """The device classes enrolled (a scan of the nodes: the page keeps it a while)."""
    n = tables.nodes.c
    return [
        r[0] for r in conn.execute(sa.select(n.device_class).distinct().order_by(n.device_class))
    ]
