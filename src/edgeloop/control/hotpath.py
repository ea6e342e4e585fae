"""The fleet's hot path: agents' polls (reads) and their reports and telemetry (small writes).

Two things keep a control plane answering thousands of agents (docs/benchmarks.md "Fleet
scale"):

* :class:`KeptReads` runs reads on kept database connections (no pool checkout, and on
  PostgreSQL no liveness ping, per read). On SQLite a read runs on the event loop itself: in WAL
  mode a reader does not wait for the writer, and an indexed read costs less than the two thread
  switches a hand-off would (they dominate the tail on a busy core). On PostgreSQL the poll's
  read (:meth:`KeptReads.credential`) runs on the event loop too, through psycopg's async
  connections, batched (:mod:`edgeloop.control.pg_reads`); other reads (rare: the admin's) run
  on a few threads of their own. Each read sees committed data: on SQLite its transaction ends
  after every read; on PostgreSQL the connections are in autocommit.
* :class:`GroupCommit` commits the writes of many requests together: one writer thread takes
  every write waiting and runs them in one transaction, so a batch costs one commit (one fsync on
  SQLite) instead of one each. (On PostgreSQL the same writes on the event loop, through
  SQLAlchemy's asyncio engine, were slower: a batch's statements wait for a turn of the busy loop
  each; docs/benchmarks.md "Fleet scale".) A request is answered only after the commit that
  holds its write, so nothing acknowledged is lost. When a batch fails, each write of it is run
  again alone, so one bad write fails only its own request.

Nothing is cached: every read asks the database, so a token or revision changed by any replica
is seen by the next request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from edgeloop.control import fleet
from edgeloop.registry import tuf_store
from edgeloop.registry.database import Database

if TYPE_CHECKING:
    from edgeloop.control.pg_reads import PgCredentials

log = logging.getLogger("edgeloop.control")
T = TypeVar("T")
READ_THREADS = 8
MAX_BATCH = 256


class KeptReads:
    """Reads on ``threads`` threads, each with its own kept connection."""

    def __init__(self, db: Database, threads: int = READ_THREADS) -> None:
        self.db = db
        self.inline = db.backend == "sqlite"
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="edgeloop-read")
        self._local = threading.local()
        self._lock = threading.Lock()
        self._conns: list[sa.Connection] = []
        self._closed = False
        self._pg: PgCredentials | None = None
        if db.backend == "postgresql":
            from edgeloop.control.pg_reads import PgCredentials  # psycopg: the postgres extra

            self._pg = PgCredentials(db)

    async def credential(self, token: str) -> tuple[str, int] | None:
        """``(node_id, desired_revision)`` of the node whose token ``token`` is, or None (the
        poll's one read). Raises StoreError when the database fails."""
        if self._pg is not None:
            return await self._pg.credential(token)
        return await self.run("checking a node token", lambda c: fleet.credential(c, token))

    async def run(self, action: str, read: Callable[[sa.Connection], T]) -> T:
        """``read(conn)`` on the loop (SQLite) or a read thread. Raises StoreError when the
        database fails."""
        if self.inline:
            return self._run(action, read)
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._run, action, read)

    def _run(self, action: str, read: Callable[[sa.Connection], T]) -> T:
        for attempt in (1, 2):
            conn = self._conn()
            try:
                try:
                    return read(conn)
                finally:
                    conn.rollback()  # end the read's snapshot: the next read sees new commits
            except sa_exc.DBAPIError as exc:
                if attempt == 1 and exc.connection_invalidated:
                    self._drop(conn)  # the server went away: reconnect once
                    continue
                raise tuf_store.translate(self.db, exc, action) from exc
            except sa_exc.SQLAlchemyError as exc:
                raise tuf_store.translate(self.db, exc, action) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _conn(self) -> sa.Connection:
        conn: sa.Connection | None = getattr(self._local, "conn", None)
        if conn is None or conn.closed or conn.invalidated:
            conn = self.db.engine.connect()
            if self.db.backend == "postgresql":
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            with self._lock:
                self._conns.append(conn)
            self._local.conn = conn
        return conn

    def _drop(self, conn: sa.Connection) -> None:
        self._local.conn = None
        with self._lock:
            if conn in self._conns:
                self._conns.remove(conn)
        conn.close()

    def close(self) -> None:
        """Stop the threads and close their connections."""
        if self._closed:
            return
        self._closed = True
        if self._pg is not None:
            self._pg.close()
        self._pool.shutdown(wait=True)
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            try:
                conn.close()
            except sa_exc.SQLAlchemyError as exc:
                log.debug("closing a read connection: %s", exc)


@dataclass
class _Job:
    action: str
    write: Callable[[sa.Connection], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]


class GroupCommit:
    """Writes of many requests, committed together by one writer thread."""

    def __init__(self, db: Database, max_batch: int = MAX_BATCH) -> None:
        self.db = db
        self.max_batch = max_batch
        self.batches = 0  # commits made (a figure for tests and the benchmark)
        self.writes = 0
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    async def run(self, action: str, write: Callable[[sa.Connection], T]) -> T:
        """``write(conn)`` inside a transaction shared with other waiting writes; returns once
        that transaction is committed. Raises what ``write`` raises, or StoreError."""
        self._start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Job(action, write, loop, future))
        return await future

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._serve, name="edgeloop-group-commit", daemon=True
                )
                self._thread.start()

    def _serve(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            jobs = [first]
            while len(jobs) < self.max_batch:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    self._queue.put(None)  # stop after this batch
                    break
                jobs.append(job)
            self._commit(jobs)

    def _commit(self, jobs: list[_Job]) -> None:
        try:
            with self.db.write() as conn:
                results = [job.write(conn) for job in jobs]
        except Exception:  # a write of the batch, or its commit, failed: each alone
            for job in jobs:
                self._alone(job)
            return
        self.batches += 1
        self.writes += len(jobs)
        _deliver([(job, result, None) for job, result in zip(jobs, results, strict=True)])

    def _alone(self, job: _Job) -> None:
        def go() -> Any:
            with self.db.write() as conn:
                return job.write(conn)

        try:
            try:
                result = tuf_store.retrying(self.db, job.action, go)
            except sa_exc.SQLAlchemyError as exc:
                raise tuf_store.translate(self.db, exc, job.action) from exc
        except Exception as exc:
            _deliver([(job, None, exc)])
            return
        self.batches += 1
        self.writes += 1
        _deliver([(job, result, None)])

    @property
    def figures(self) -> tuple[int, int]:
        """``(commits, writes)`` made so far."""
        return self.batches, self.writes

    def close(self) -> None:
        """Finish the writes already queued, then stop the writer thread."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout=60)


def _deliver(answers: list[tuple[_Job, Any, BaseException | None]]) -> None:
    """Settle the futures of ``answers``: one wake-up of each waiting loop for a whole batch
    (each wake-up is a write to the loop's self-pipe and a turn of the loop)."""

    def settle(mine: list[tuple[_Job, Any, BaseException | None]]) -> None:
        for job, result, error in mine:
            if job.future.done():
                continue  # the request was cancelled (its client went away)
            if error is not None:
                job.future.set_exception(error)
            else:
                job.future.set_result(result)

    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Job, Any, BaseException | None]]] = {}
    for answer in answers:
        by_loop.setdefault(answer[0].loop, []).append(answer)
    for loop, mine in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits for this answer
            loop.call_soon_threadsafe(settle, mine)
