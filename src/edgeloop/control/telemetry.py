"""Telemetry from nodes: items de-duplicated by ``(node_id, id)``, queried by the admin.

Delivery from the agent is at least once, so the same item may arrive again after a lost
answer; a known ``(node_id, id)`` is counted as a duplicate and not stored twice. Malformed items
are rejected one by one with a reason (retrying cannot fix them); the batch itself is refused only
when its shape or size is wrong.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from edgeloop.control import drift_history, monitoring, tables
from edgeloop.control.fleet import iso
from edgeloop.core.errors import ConfigError, DataError

KINDS = frozenset({"metrics", "event", "sample", "capture", "dropped"})
CONTENT_TYPES = frozenset({"application/json", "application/octet-stream"})
MAX_ITEMS = 1000
DEFAULT_LIMIT = 1000
# The times an item may carry: from 2000-01-01 (a node whose clock has not been set yet says
# 1970) to a day past the control plane's clock (a node's clock may run a little fast). An item
# from year 1 was stored once, and every read of the telemetry then answered 500 (issue 17).
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC).timestamp()
AHEAD_S = 86400.0


def _instant(text: Any, field: str = "created_at") -> float:
    """RFC 3339 text with a time zone as Unix seconds. Raises ValueError."""
    if not isinstance(text, str) or "T" not in text or len(text) > 64:
        raise ValueError(f"{field} {str(text)[:64]!r} is not an RFC 3339 time")
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        if moment.tzinfo is None:
            raise ValueError(f"{field} {text!r} has no time zone; add Z or +HH:MM")
        return moment.timestamp()
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"{field} {text!r} is not a valid time: {exc}") from None


def _created(text: Any, now: float) -> float:
    """An item's ``created_at`` as Unix seconds, within the accepted range. Raises ValueError."""
    moment = _instant(text)
    if not EARLIEST <= moment <= now + AHEAD_S:
        raise ValueError(
            f"created_at {text!r} is out of range: expected a time from {iso(EARLIEST)} to a "
            f"day past the control plane's clock ({iso(now)}); check the node's clock"
        )
    return moment


def _row(node_id: str, item: Any, now: float) -> dict[str, Any]:
    """The table row of ``item``. Raises ValueError naming what is wrong."""
    if not isinstance(item, Mapping):
        raise ValueError("the item is not an object")
    item_id = str(uuid.UUID(str(item.get("id"))))
    kind, ctype = item.get("kind"), item.get("content_type", "application/json")
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r} is not one of {sorted(KINDS)}")
    if ctype not in CONTENT_TYPES:
        raise ValueError(f"content_type {ctype!r} is not one of {sorted(CONTENT_TYPES)}")
    payload = item.get("payload")
    if ctype == "application/octet-stream":
        try:
            base64.b64decode(str(payload), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("payload is not base64") from exc
        text, model, version = str(payload), None, None
    else:
        text = json.dumps(payload)
        named = payload if isinstance(payload, Mapping) else {}
        model, version = named.get("model"), named.get("model_version")
    return {
        "node_id": node_id,
        "item_id": item_id,
        "kind": kind,
        "created_at": _created(item.get("created_at"), now),
        "received_at": now,
        "content_type": ctype,
        "payload": text,
        "model": None if model is None else str(model)[:128],
        "model_version": None if version is None else str(version)[:32],
    }


def check_batch(body: Any) -> list[Any]:
    """The items of a telemetry body. Raises DataError (422) for a wrong shape or count."""
    items = body.get("items") if isinstance(body, Mapping) else None
    if not isinstance(items, list):
        raise DataError('a telemetry body must be {"items": [...]}', hint="see fleet-protocol.md")
    if len(items) > MAX_ITEMS:
        raise DataError(
            f"{len(items)} telemetry items in one batch; at most {MAX_ITEMS}",
            hint="send smaller batches",
        )
    return items


def store(conn: sa.Connection, node_id: str, items: list[Any]) -> dict[str, Any]:
    """Store the new items of one batch; the counts the agent is answered with."""
    rows, rejected = prepare(node_id, items, time.time())
    return store_rows(conn, node_id, rows, rejected)


def prepare(
    node_id: str, items: list[Any], now: float
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The table rows of a batch's well-formed items and the rejections of the others (done
    before the write transaction, so it holds no lock while items are checked)."""
    rows, rejected = [], []
    for item in items:
        try:
            rows.append(_row(node_id, item, now))
        except (ValueError, TypeError) as exc:
            ident = item.get("id") if isinstance(item, Mapping) else None
            rejected.append({"id": ident, "reason": str(exc)})
    return rows, rejected


def store_rows(
    conn: sa.Connection, node_id: str, rows: list[dict[str, Any]], rejected: list[dict[str, Any]]
) -> dict[str, Any]:
    """Store the rows :func:`prepare` made that are not stored yet; the answer's counts."""
    ids = {r["item_id"] for r in rows}
    known = set(
        conn.execute(
            sa.select(tables.telemetry.c.item_id).where(
                tables.telemetry.c.node_id == node_id, tables.telemetry.c.item_id.in_(ids)
            )
        ).scalars()
    ) if ids else set()  # fmt: skip
    fresh: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["item_id"] not in known:
            fresh.setdefault(row["item_id"], row)  # an id twice in one batch: stored once
    if fresh:
        conn.execute(tables.telemetry.insert(), list(fresh.values()))
        # Fleet monitoring folds the new metrics and monitor events in the same transaction.
        updates = monitoring.fold(node_id, fresh.values())
        if updates:
            monitoring.apply(conn, updates, rows[0]["received_at"])
            drift_history.record(conn, node_id, updates, rows[0]["received_at"])
    duplicates = len(rows) - len(fresh)
    monitoring.INGEST.update(accepted=len(fresh), duplicates=duplicates, rejected=len(rejected))
    return {"accepted": len(fresh), "duplicates": duplicates, "rejected": rejected}


def query(conn: sa.Connection, params: Mapping[str, str]) -> list[dict[str, Any]]:
    """Stored items matching ``params`` (node, model, version, kind, since, until, limit)."""
    t = tables.telemetry
    q = sa.select(t).order_by(t.c.created_at, t.c.item_id)
    for key, column in (("node", t.c.node_id), ("model", t.c.model),
                        ("version", t.c.model_version), ("kind", t.c.kind)):  # fmt: skip
        if params.get(key):
            q = q.where(column == params[key])
    try:
        if params.get("since"):
            q = q.where(t.c.created_at >= _instant(params["since"], "since"))
        if params.get("until"):
            q = q.where(t.c.created_at < _instant(params["until"], "until"))
        limit = int(params.get("limit") or DEFAULT_LIMIT)
    except ValueError as exc:
        raise ConfigError(f"bad telemetry query: {exc}", hint="since/until are RFC 3339") from exc
    if not 1 <= limit <= 100_000:
        raise ConfigError(f"limit {limit} is not valid; expected 1 to 100000")
    return [_stored(r) for r in conn.execute(q.limit(limit))]


def _stored(row: sa.Row[Any]) -> dict[str, Any]:
    """A stored item as the API shows it. A row that cannot be shown (stored before its fields
    were checked, or changed by hand) is shown with ``"unreadable": <why>`` and the fields that
    could not be read as null: one bad row never fails the whole read."""
    doc: dict[str, Any] = {"id": row.item_id, "kind": row.kind, "content_type": row.content_type,
                           "node_id": row.node_id, "model": row.model,
                           "model_version": row.model_version}  # fmt: skip
    problems = []
    renders: tuple[tuple[str, Callable[[sa.Row[Any]], Any]], ...] = (
        ("created_at", lambda r: datetime.fromtimestamp(r.created_at, UTC).isoformat()),
        ("received_at", lambda r: iso(r.received_at)),
        ("payload", _payload),
    )
    for key, render in renders:
        try:
            doc[key] = render(row)
        except (ValueError, OverflowError, OSError, TypeError) as exc:
            doc[key] = None
            problems.append(f"{key}: {exc}")
    if problems:
        doc["unreadable"] = "; ".join(problems)
    return doc


def _payload(row: sa.Row[Any]) -> Any:
    binary = row.content_type == "application/octet-stream"
    return row.payload if binary else json.loads(row.payload)
