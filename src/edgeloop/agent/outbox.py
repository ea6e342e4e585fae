"""The node's telemetry outbox: a durable, size-capped SQLite queue, delivered at least once.

Metrics snapshots, updater events and sampled inputs/outputs go in with :meth:`Outbox.put`; the
shipper takes them out with :meth:`Outbox.batch` and removes them with :meth:`Outbox.ack` once the
control plane answered 2xx. ``put`` returns only after the row is committed (WAL,
``synchronous=FULL``), so a ``kill -9`` or a power cut after ``put`` returned loses nothing.

Delivery is at least once: a batch is *leased*, not removed. An item not acked within its lease,
or still leased when the outbox is opened again after a restart, is handed out again. Every item
carries a unique, time-ordered id (UUIDv7 layout, RFC 9562) so the control plane drops the
duplicates this can make.

Cap policy (``max_bytes`` of payload and ``max_items``), applied at every ``put``:

1. the oldest ``sample`` items go first,
2. then the oldest ``capture`` items (rows a capture policy kept; large, bounded by its cap),
3. then the oldest ``metrics`` items,
4. ``event`` items (updater transitions) only when nothing else is left.

An item that is out in a batch (leased) is never dropped, since that batch may still be delivered:
when the lowest kind present is all leased, the outbox stays over its cap by that batch (at most
:meth:`Outbox.batch`'s ``max_bytes``) until the batch is acked or its lease ends, rather than drop
a more valuable kind. So the drop count never counts an item that arrived. Each drop is counted per
kind (:meth:`Outbox.stats`) and reported: the next :meth:`Outbox.batch` carries a ``dropped`` item
with the counts since the last report, delivered like any other item. Nothing is lost silently.
``dropped`` items are outside the cap and never dropped (150 to 200 bytes each), so how many items
are dropped does not depend on when the shipper tried to ship. A batch makes at most one report, so
a partition adds at most one per shipping attempt that saw new drops (with the shipper's 60 s back-
off ceiling, at most 1,440 a day, about 0.3 MB).

One process writes an outbox at a time (the agent); opening it releases every lease.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeloop.agent.outbox_backlog import Backlog, KindBacklog
from edgeloop.agent.outbox_drops import PRIO_OF, PRIORITY, enforce_cap, report_drops
from edgeloop.agent.outbox_item import (
    BINARY,
    JSON,
    Item,
    ItemKind,
    encode_payload,
    iso,
    new_id,
    parse_kind,
)
from edgeloop.core.errors import ConfigError, DataError, StoreError

# Re-exported: callers import the item's names from here (agent/outbox_item.py holds them).
__all__ = [
    "BINARY",
    "FILENAME",
    "JSON",
    "Item",
    "ItemKind",
    "Outbox",
    "OutboxStats",
    "iso",
    "new_id",
]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    prio INTEGER NOT NULL,
    created_at REAL NOT NULL,
    content_type TEXT NOT NULL,
    payload BLOB NOT NULL,
    size INTEGER NOT NULL,
    leased_until REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS items_victims ON items (prio, seq);
CREATE TABLE IF NOT EXISTS totals (kind TEXT PRIMARY KEY, items INTEGER NOT NULL,
                                   bytes INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS drops (kind TEXT PRIMARY KEY, total INTEGER NOT NULL,
                                  unreported INTEGER NOT NULL, first_at REAL, last_at REAL);
CREATE TRIGGER IF NOT EXISTS items_in AFTER INSERT ON items BEGIN
    INSERT INTO totals VALUES (NEW.kind, 1, NEW.size) ON CONFLICT(kind) DO UPDATE
        SET items = items + 1, bytes = bytes + NEW.size;
END;
CREATE TRIGGER IF NOT EXISTS items_out AFTER DELETE ON items BEGIN
    UPDATE totals SET items = items - 1, bytes = bytes - OLD.size WHERE kind = OLD.kind;
END;
"""

_WAITING = (
    "SELECT seq, id, kind, created_at, content_type, payload FROM items WHERE leased_until <= ?"
)

FILENAME = "outbox.sqlite"  # the outbox's file in the agent's folder: HOME/agent/outbox.sqlite


@dataclass(frozen=True, slots=True)
class OutboxStats:
    """Counts as stored right now; ``dropped`` are totals since the outbox was created."""

    items: dict[str, int]
    bytes: int
    dropped: dict[str, int]
    unreported_dropped: dict[str, int]
    leased: int
    max_items: int
    max_bytes: int
    oldest_created_at: float | None = field(default=None)

    @property
    def total_items(self) -> int:
        return sum(self.items.values())


class Outbox:
    """The queue; construct it with :meth:`open`. Thread-safe (one connection behind a lock)."""

    def __init__(self, conn: sqlite3.Connection, path: Path, max_bytes: int, max_items: int):
        self._conn = conn
        self._lock = threading.Lock()
        self.path = path
        self.max_bytes = max_bytes
        self.max_items = max_items

    @classmethod
    def open(cls, path: Path, max_bytes: int = 64 << 20, max_items: int = 100_000) -> Outbox:
        """Open (or create) the outbox file and release every lease a previous run held.

        Raises:
            ConfigError: a cap is not positive.
            StoreError: the file cannot be opened or is not an outbox database.
        """
        if max_bytes <= 0 or max_items <= 0:
            raise ConfigError(
                f"outbox caps must be positive, got max_bytes={max_bytes}, max_items={max_items}",
                hint="give the outbox a size, e.g. max_bytes=64 MiB, max_items=100000",
            )
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=10000")
            conn.executescript(_SCHEMA)
            conn.execute("UPDATE items SET leased_until = 0 WHERE leased_until > 0")
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(
                f"cannot open the telemetry outbox {str(path)!r}: {exc}",
                hint="check the agent home is writable and the file is not another database",
            ) from exc
        return cls(conn, path, max_bytes, max_items)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, committed (and fsynced) before the block's caller returns."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self._conn
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StoreError(
                    f"telemetry outbox {str(self.path)!r} failed: {exc}",
                    hint="check free disk space and that one agent uses this home",
                ) from exc

    def put(self, kind: ItemKind | str, payload: Any) -> str:
        """Queue one record durably and return its id; may drop older records (module doc).

        ``payload`` is ``bytes`` (sent base64) or any JSON-serialisable value. One commit, one
        fsync (about 2 ms on this project's machines): call it off the event loop
        (``asyncio.to_thread``) and use :meth:`put_many` for many records at once.

        Raises:
            ConfigError: ``kind`` is not sample, metrics or event.
            DataError: the payload is not JSON-serialisable, or alone is larger than ``max_bytes``.
            StoreError: the database failed.
        """
        return self.put_many([(kind, payload)])[0]

    def put_many(self, records: Iterable[tuple[ItemKind | str, Any]]) -> list[str]:
        """Queue several ``(kind, payload)`` records in one transaction (one fsync); all or none.

        Raises:
            as :meth:`put`, before anything is stored.
        """
        rows = []
        for kind, payload in records:
            parsed = parse_kind(kind)
            content_type, blob = encode_payload(payload)
            if len(blob) > self.max_bytes:
                raise DataError(
                    f"a {parsed.value} payload of {len(blob)} bytes is larger than the outbox "
                    f"cap of {self.max_bytes} bytes",
                    hint="sample smaller inputs or raise the outbox's max_bytes",
                )
            rows.append((new_id(), parsed.value, PRIORITY[parsed], content_type, blob, len(blob)))
        now = time.time()
        with self._tx() as conn:
            for item_id, kind_name, prio, content_type, blob, size in rows:
                conn.execute(
                    "INSERT INTO items (id, kind, prio, created_at, content_type, payload, size)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (item_id, kind_name, prio, now, content_type, blob, size),
                )
                enforce_cap(conn, now, self.max_items, self.max_bytes)
        return [row[0] for row in rows]

    def batch(
        self, max_items: int = 500, max_bytes: int = 1 << 20, lease_s: float = 60.0
    ) -> list[Item]:
        """Lease the oldest items not out in another batch, oldest first.

        Drops not yet reported are first turned into a ``dropped`` item (it goes in this batch).
        The batch holds at most ``max_items`` items and ``max_bytes`` of payload, but always at
        least one item when any is waiting, so an item larger than ``max_bytes`` is not stuck.
        Items not acked within ``lease_s`` seconds are handed out again.

        Raises:
            ConfigError: a limit is not positive.
            StoreError: the database failed.
        """
        if max_items <= 0 or max_bytes <= 0 or lease_s <= 0:
            raise ConfigError(
                f"batch limits must be positive, got max_items={max_items}, "
                f"max_bytes={max_bytes}, lease_s={lease_s}"
            )
        now = time.time()
        with self._tx() as conn:
            report_drops(conn, now)
            # Drop reports first, so a full batch never holds one back; then oldest first.
            rows = [
                *conn.execute(_WAITING + " AND prio = ? ORDER BY seq LIMIT ?", (now, 3, max_items)),
                *conn.execute(_WAITING + " AND prio<>? ORDER BY seq LIMIT ?", (now, 3, max_items)),
            ][:max_items]
            out: list[Item] = []
            total = 0
            for seq, item_id, kind, created_at, content_type, payload in rows:
                if out and total + len(payload) > max_bytes:
                    break
                total += len(payload)
                out.append(Item(item_id, seq, ItemKind(kind), created_at, content_type, payload))
            conn.executemany(
                "UPDATE items SET leased_until = ? WHERE seq = ?",
                [(now + lease_s, item.seq) for item in out],
            )
        return out

    def ack(self, ids: Iterable[str]) -> int:
        """Remove delivered items; returns how many were still queued (unknown ids are fine).

        Raises:
            StoreError: the database failed.
        """
        with self._tx() as conn:
            cur = conn.executemany("DELETE FROM items WHERE id = ?", [(i,) for i in ids])
            return max(cur.rowcount, 0)

    def release(self, ids: Iterable[str]) -> None:
        """End the lease of items a failed delivery held, so the next batch hands them out."""
        with self._tx() as conn:
            conn.executemany("UPDATE items SET leased_until = 0 WHERE id = ?", [(i,) for i in ids])

    def stats(self) -> OutboxStats:
        """Items and bytes by kind, leased items, and drop counts by kind (total and unreported).

        Raises:
            StoreError: the database failed.
        """
        now = time.time()
        with self._tx() as conn:
            totals = conn.execute("SELECT kind, items, bytes FROM totals").fetchall()
            drops = conn.execute("SELECT kind, total, unreported FROM drops").fetchall()
            leased, oldest = conn.execute(
                "SELECT COALESCE(SUM(leased_until > ?), 0), MIN(created_at) FROM items", (now,)
            ).fetchone()
        return OutboxStats(
            items={k: n for k, n, _ in totals if n},
            bytes=sum(b for _, _, b in totals),
            dropped={k: t for k, t, _ in drops},
            unreported_dropped={k: u for k, _, u in drops if u},
            leased=int(leased),
            max_items=self.max_items,
            max_bytes=self.max_bytes,
            oldest_created_at=oldest,
        )

    def backlog(self) -> Backlog:
        """Rows and bytes waiting per kind and each kind's oldest ``created_at`` (what the
        agent's report carries as ``outbox``: docs/fleet-protocol.md). A few indexed reads.

        Raises:
            StoreError: the database failed.
        """
        with self._tx() as conn:
            totals = conn.execute(
                "SELECT kind, items, bytes FROM totals WHERE items > 0"
            ).fetchall()
            oldest = {}
            for kind, _, _ in totals:
                prio = PRIO_OF.get(kind)
                if prio is None:
                    continue
                row = conn.execute(  # the index (prio, seq): the first row of the kind
                    "SELECT created_at FROM items WHERE prio = ? ORDER BY seq LIMIT 1", (prio,)
                ).fetchone()
                if row is not None:
                    oldest[kind] = float(row[0])
        return Backlog({str(k): KindBacklog(int(n), int(b), oldest.get(k)) for k, n, b in totals})
