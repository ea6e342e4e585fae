"""A node's outbox backlog totals, kept in indexed columns of ``control_nodes`` beside the report.

:func:`totals` takes them from the report text as it is stored (``outbox.rows``, ``bytes``,
``oldest_age_s``: docs/fleet-protocol.md), so the fleet's "backlog > 0" filter is an indexed
``backlog_rows > 0`` instead of a JSON parse of every node's report. ``backlog_at`` says when
they were written; a report stored without them (a database older than the columns, or a row
written by other means) has it NULL, and the filter reads that report's JSON instead.
:func:`add_columns` adds the columns to a database made before them (idempotent, safe against a
racing control plane doing the same).
"""

from __future__ import annotations

import math
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from edgeloop.registry.database import Database

COLUMNS = (
    ("backlog_rows", "BIGINT"),
    ("backlog_bytes", "BIGINT"),
    ("backlog_oldest_s", "DOUBLE PRECISION"),
    ("backlog_at", "DOUBLE PRECISION"),
)
INDEX = "CREATE INDEX IF NOT EXISTS ix_control_nodes_backlog_rows ON control_nodes (backlog_rows)"
_MAX = 1 << 62  # a count past this is not a count (and would overflow BIGINT)


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX:
        return None
    return value


def _age(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) and value >= 0 else None


def totals(text: str, now: float) -> dict[str, Any]:
    """The backlog columns of a stored report's text: a figure the report does not carry (an
    agent older than the field) or carries malformed is NULL."""
    try:
        report = orjson.loads(text)
    except orjson.JSONDecodeError:
        report = None
    box = report.get("outbox") if isinstance(report, dict) else None
    box = box if isinstance(box, dict) else {}
    return {
        "backlog_rows": _count(box.get("rows")),
        "backlog_bytes": _count(box.get("bytes")),
        "backlog_oldest_s": _age(box.get("oldest_age_s")),
        "backlog_at": now,
    }


def add_columns(db: Database) -> None:
    """Add the backlog columns and their index to a ``control_nodes`` made before them."""
    with db.engine.connect() as conn:
        have = {c["name"] for c in sa.inspect(conn).get_columns("control_nodes")}
    missing = [(name, kind) for name, kind in COLUMNS if name not in have]
    for name, kind in missing:
        try:
            with db.engine.begin() as conn:
                conn.execute(sa.text(f"ALTER TABLE control_nodes ADD COLUMN {name} {kind}"))
        except sa_exc.DBAPIError:  # another control plane added it first
            with db.engine.connect() as conn:
                if name not in {c["name"] for c in sa.inspect(conn).get_columns("control_nodes")}:
                    raise
    with db.engine.begin() as conn:
        conn.execute(sa.text(INDEX))
