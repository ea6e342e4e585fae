"""A node's telemetry outbox backlog as its report carries it (``outbox``: rows and bytes waiting
per kind, the oldest item's age; docs/fleet-protocol.md), for the fleet and node pages.

The fleet's "backlog > 0" filter reads the totals the control plane keeps beside each report
(``control_nodes.backlog_rows``, indexed; control/backlog_store.py), not the report's JSON. Only a
report stored without them (``backlog_at`` NULL: before the columns existed) is read as JSON:
``json_extract`` on SQLite, a ``jsonb`` path on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from edgeloop.control import tables
from edgeloop.control.ui.html import Html, escape
from edgeloop.control.ui.widgets import table

WAITING = "waiting"  # the fleet filter's value: nodes whose outbox holds at least one row


def waiting(dialect: str) -> sa.ColumnElement[bool]:
    """SQL: the node's last report says its outbox holds at least one row."""
    n = tables.nodes.c
    if dialect == "postgresql":
        rows = sa.cast(n.reported, postgresql.JSONB)[("outbox", "rows")].astext
        legacy = sa.cast(rows, sa.BigInteger) > 0
    else:
        legacy = sa.func.json_extract(n.reported, "$.outbox.rows") > 0
    unkept = sa.and_(n.backlog_at.is_(None), n.reported.is_not(None), legacy)
    return sa.or_(n.backlog_rows > 0, unkept)


def of(report: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The report's ``outbox`` object, or None when the agent did not send one."""
    found = (report or {}).get("outbox")
    return found if isinstance(found, Mapping) else None


def size(n: Any) -> str:
    """Bytes as B / KiB / MiB."""
    if not isinstance(n, int | float):
        return "n/a"
    if n < 1024:
        return f"{n:.0f} B"
    if n < 1 << 20:
        return f"{n / 1024:.1f} KiB"
    return f"{n / (1 << 20):.1f} MiB"


def age(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return "none waiting"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def cell(report: Mapping[str, Any] | None) -> Html:
    """The fleet table's cell: ``12 rows, 3.4 KiB`` and the oldest's age, or ``n/a``."""
    found = of(report)
    if found is None:
        return Html('<span class="note">n/a</span>')
    rows = found.get("rows")
    if not rows:
        return Html("empty")
    return Html(
        f"{escape(rows)} rows, {escape(size(found.get('bytes')))}"
        f"<br><small>oldest {escape(age(found.get('oldest_age_s')))}</small>"
    )


def section_body(report: Mapping[str, Any] | None) -> Html:
    """The node page's table: one row per kind waiting, then the total."""
    found = of(report)
    if found is None:
        return Html(
            '<p class="note">n/a: this node\'s agent does not report its outbox backlog '
            "(an agent older than the field)</p>"
        )
    given = found.get("kinds")
    kinds: Mapping[str, Any] = given if isinstance(given, Mapping) else {}
    rows = [
        (kind, v.get("rows"), size(v.get("bytes")), age(v.get("oldest_age_s")))
        for kind, v in sorted(kinds.items())
        if isinstance(v, Mapping)
    ]
    rows.append(
        (
            Html("<strong>all kinds</strong>"),
            found.get("rows"),
            size(found.get("bytes")),
            age(found.get("oldest_age_s")),
        )
    )
    return table(
        "Telemetry waiting in the node's outbox (as of its last report)",
        ("Kind", "Rows", "Bytes", "Oldest waiting"),
        rows,
    )
