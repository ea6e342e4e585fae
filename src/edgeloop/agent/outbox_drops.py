"""The outbox's cap policy (:mod:`edgeloop.agent.outbox`, module doc): which item goes when a
cap is passed, how each drop is counted, and the ``dropped`` item that reports the counts."""

from __future__ import annotations

import json
import sqlite3

from edgeloop.agent.outbox_item import JSON, ItemKind, iso, new_id

# The stored prio of each kind (drop order: _DROP_ORDER). DROPPED is excluded from victims.
# CAPTURE came later: its number is new, so outboxes written before keep their meaning.
PRIORITY = {
    ItemKind.SAMPLE: 0,
    ItemKind.METRICS: 1,
    ItemKind.EVENT: 2,
    ItemKind.DROPPED: 3,
    ItemKind.CAPTURE: 4,
}
PRIO_OF = {k.value: p for k, p in PRIORITY.items()}
_DROP_ORDER = (ItemKind.SAMPLE, ItemKind.CAPTURE, ItemKind.METRICS, ItemKind.EVENT)


def enforce_cap(conn: sqlite3.Connection, now: float, max_items: int, max_bytes: int) -> None:
    """Drop items (counted in ``drops``) until the outbox is within ``max_items`` and
    ``max_bytes``, in the order of the module doc; drop reports are never dropped."""
    items, size = conn.execute(
        "SELECT COALESCE(SUM(items), 0), COALESCE(SUM(bytes), 0) FROM totals"
        " WHERE kind != 'dropped'"
    ).fetchone()
    while items > max_items or size > max_bytes:
        victim = _victim(conn, now)
        if victim is None:  # only drop reports or a batch in flight left: wait for it
            return
        seq, kind, victim_size = victim
        conn.execute("DELETE FROM items WHERE seq = ?", (seq,))
        conn.execute(
            "INSERT INTO drops VALUES (?, 1, 1, ?, ?) ON CONFLICT(kind) DO UPDATE SET"
            " total = total + 1, unreported = unreported + 1,"
            " first_at = COALESCE(first_at, excluded.first_at), last_at = excluded.last_at",
            (kind, now, now),
        )
        items -= 1
        size -= victim_size


def report_drops(conn: sqlite3.Connection, now: float) -> None:
    """Turn the drops not yet reported into one ``dropped`` item and mark them reported."""
    rows = conn.execute(
        "SELECT kind, unreported, first_at, last_at FROM drops WHERE unreported > 0"
    ).fetchall()
    if not rows:
        return
    report = {
        "counts": {kind: n for kind, n, _, _ in rows},
        "first_dropped_at": iso(min(r[2] for r in rows)),
        "last_dropped_at": iso(max(r[3] for r in rows)),
        "reason": "outbox cap reached",
    }
    blob = json.dumps(report, sort_keys=True).encode()
    conn.execute(
        "INSERT INTO items (id, kind, prio, created_at, content_type, payload, size)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (new_id(), "dropped", PRIORITY[ItemKind.DROPPED], now, JSON, blob, len(blob)),
    )
    conn.execute("UPDATE drops SET unreported = 0, first_at = NULL, last_at = NULL")


def _victim(conn: sqlite3.Connection, now: float) -> tuple[int, str, int] | None:
    """The next item to drop: the oldest item of the lowest priority that is not out in a batch.

    A leased item is never dropped: the batch it is in may still be delivered, and then the drop
    count would count an item that arrived. When the lowest kind still present is all leased,
    nothing goes (``None``) rather than a more valuable kind: the outbox stays over its cap by
    that batch until the batch is acked or its lease ends."""
    for kind in _DROP_ORDER:
        prio = PRIORITY[kind]
        row = conn.execute(
            "SELECT seq, kind, size FROM items WHERE prio = ? AND leased_until <= ?"
            " ORDER BY seq LIMIT 1",
            (prio, now),
        ).fetchone()
        if row is not None:
            return (int(row[0]), str(row[1]), int(row[2]))
        if conn.execute("SELECT 1 FROM items WHERE prio = ? LIMIT 1", (prio,)).fetchone():
            return None  # this kind is all in flight: wait for it, keep the better kinds
    return None
