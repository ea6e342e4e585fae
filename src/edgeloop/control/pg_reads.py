"""Token checks on PostgreSQL, on the event loop, batched: the read of every agent poll.

A poll is answered by one indexed read by token hash (:func:`edgeloop.control.fleet.credential`).
Run on read threads, each read cost two thread switches and a hand-off of the GIL between the
busy event loop and the thread (docs/benchmarks.md "Fleet scale"). Here the reads run on the
event loop through psycopg's async connections, and the checks waiting when a connection comes
free are answered by one query (``token_hash = ANY(digests)``, prepared once): under load one
round trip answers many polls, idle it answers one at once.

Every check sees committed data: the connections are in autocommit, and a check joins only a
query sent after it arrived, so a token revoked or a revision written by any replica before the
request came is seen. Nothing is cached.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import psycopg

from edgeloop.control import fleet
from edgeloop.control.auth import token_hash
from edgeloop.core.errors import StoreError
from edgeloop.registry.database import CONNECT_TIMEOUT_S, Database

# Queries in flight at once: two keep one batch filling while the other is answered. (Not tuned
# further; more connections would split the same waiting polls into smaller batches.)
CONNECTIONS = 2
MAX_BATCH = 500
Row = tuple[Any, ...]
_Waiting = tuple[str, "asyncio.Future[Row | None]"]


class PgCredentials:
    """Batched credential reads on up to ``connections`` async connections of the loop."""

    def __init__(self, db: Database, connections: int = CONNECTIONS) -> None:
        _, params = db.engine.dialect.create_connect_args(db.engine.url)
        self._params: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT_S, **params}
        self._sql = str(fleet.CREDENTIALS.compile(dialect=db.engine.dialect))
        self._shown = db.display_url
        self._limit = connections
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._open: list[psycopg.AsyncConnection[Any]] = []
        self._waiting: list[_Waiting] = []
        self._running = 0  # drain tasks alive
        self._starting = False  # a drain task created that has not taken its batch yet
        self._tasks: set[asyncio.Task[None]] = set()
        self.checks = 0  # tokens checked and queries sent (figures for tests and benchmarks)
        self.queries = 0

    async def credential(self, token: str) -> tuple[str, int] | None:
        """``(node_id, desired_revision)`` of the node whose token ``token`` is, or None.
        Raises StoreError when the database fails."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # connections belong to the loop that opened them
            self.close()
            self._loop = loop
        future: asyncio.Future[Row | None] = loop.create_future()
        self._waiting.append((token_hash(token), future))
        if not self._starting and self._running < self._limit:
            self._starting = True
            self._running += 1
            task = loop.create_task(self._drain())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return fleet.checked(token, await future)

    async def _drain(self) -> None:
        try:
            while self._waiting:
                self._starting = False
                batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
                await self._answer(batch)
        finally:
            self._starting = False
            self._running -= 1

    async def _answer(self, batch: list[_Waiting]) -> None:
        digests = sorted({digest for digest, _ in batch})
        self.checks += len(batch)
        self.queries += 1
        try:
            rows = await self._query(digests)
        except Exception as exc:  # StoreError, or a bug: each waiting request gets it
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        found = {str(row[1]): row for row in rows}
        for digest, future in batch:
            if not future.done():  # else: the request was cancelled (its client went away)
                future.set_result(found.get(digest))

    async def _query(self, digests: list[str]) -> list[Row]:
        for attempt in (1, 2):
            conn = await self._connection()
            try:
                cursor = await conn.execute(self._sql, {"digests": digests}, prepare=True)
                rows = await cursor.fetchall()
            except psycopg.Error as exc:
                self._discard(conn)
                if attempt == 1 and isinstance(exc, psycopg.OperationalError):
                    continue  # the server closed the connection: reconnect once
                raise self._error(exc) from exc
            self._idle.append(conn)
            return rows
        raise AssertionError("unreachable")  # pragma: no cover

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._idle:
            return self._idle.pop()
        try:
            conn = await psycopg.AsyncConnection.connect(**self._params, autocommit=True)
        except psycopg.Error as exc:
            raise self._error(exc) from exc
        self._open.append(conn)
        return conn

    def _discard(self, conn: psycopg.AsyncConnection[Any]) -> None:
        if conn in self._open:
            self._open.remove(conn)
        conn.pgconn.finish()

    def _error(self, exc: psycopg.Error) -> StoreError:
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return StoreError(
            f"checking a node token failed on database {self._shown}: {detail}",
            hint="check that the database is reachable (--db / EDGELOOP_DB)",
        )

    def close(self) -> None:
        """Close the connections (callable after their loop has ended: libpq closes them)."""
        for conn in self._open:
            conn.pgconn.finish()
        self._open, self._idle = [], []
        for task in list(self._tasks):
            with contextlib.suppress(RuntimeError):  # its loop has ended
                task.cancel()
        self._tasks.clear()
