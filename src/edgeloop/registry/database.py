"""Opening the registry database from a SQLAlchemy URL: checks, driver set-up, transactions.

Two backends are supported and tested: SQLite (the embedded default, one file in the edgeloop
home) and PostgreSQL through psycopg 3 (several processes or control-plane replicas sharing
one database). Anything else is refused up front rather than half working.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy import exc as sa_exc

from edgeloop.core.errors import ConfigError, ConflictError, MissingDependencyError, StoreError

ACCEPTED_URLS = (
    "sqlite:///PATH/registry.db, or postgresql+psycopg://USER[:PASSWORD]@HOST[:PORT]/DATABASE"
)
# How long a writer waits for another one's lock before giving up (seconds).
BUSY_TIMEOUT_S = 30
# Finite by default: an unreachable PostgreSQL fails in seconds instead of hanging a command.
CONNECT_TIMEOUT_S = 10
# SQLSTATEs of a lost race, worth retrying: unique violation, serialization failure, deadlock.
_PG_RACES = frozenset({"23505", "40001", "40P01"})
_WRITE_OPTION = "edgeloop_write"
_SQLITE_PRAGMAS = (
    # busy_timeout first, so that switching the journal mode waits for other connections too.
    f"busy_timeout={BUSY_TIMEOUT_S * 1000}",
    "journal_mode=WAL",
    "synchronous=FULL",
    "foreign_keys=ON",
)


class Database:
    """An engine plus the one thing callers need to know about it: how to open a write."""

    def __init__(self, engine: sa.Engine, backend: str) -> None:
        self.engine = engine
        self.backend = backend
        self.display_url = engine.url.render_as_string(hide_password=True)

    @contextmanager
    def write(self) -> Iterator[sa.Connection]:
        """A transaction meant to write; on SQLite it holds the write lock from its start."""
        with self.engine.connect() as conn:
            if self.backend == "sqlite":
                conn = conn.execution_options(**{_WRITE_OPTION: True})
            with conn.begin():
                yield conn

    def is_race(self, exc: sa_exc.DBAPIError) -> bool:
        """Whether ``exc`` means "another writer got there first" (retrying can succeed)."""
        if self.backend == "postgresql":
            return getattr(exc.orig, "sqlstate", None) in _PG_RACES
        text = str(exc.orig)
        return "database is locked" in text or "UNIQUE constraint failed" in text

    def translate(
        self, exc: sa_exc.SQLAlchemyError, action: str, what: str
    ) -> StoreError | ConflictError:
        """The library's error for a database error while doing ``action`` on the ``what``
        store: only a lost race is a conflict (run it again); any other refusal means the
        database is not as expected."""
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        if isinstance(exc, sa_exc.DBAPIError) and self.is_race(exc):
            return ConflictError(
                f"{action} conflicts with stored state in {self.display_url}: {detail}",
                hint=f"another writer changed the {what} at the same time; run the command again",
            )
        return StoreError(
            f"{action} failed on database {self.display_url}: {detail}",
            hint="check that the database is reachable and writable (EDGELOOP_DB / --home)",
        )


def connect(url: str) -> Database:
    """Check ``url`` and build an engine for it (no connection is opened yet).

    Raises:
        ConfigError: the URL is malformed, names an unsupported backend or an in-memory SQLite.
        MissingDependencyError: the PostgreSQL driver (psycopg) is not installed.
    """
    parsed = _parse(url)
    backend = parsed.get_backend_name()
    try:
        if backend == "sqlite":
            engine = sa.create_engine(parsed, connect_args={"timeout": BUSY_TIMEOUT_S})
            event.listen(engine, "connect", _sqlite_on_connect)
            event.listen(engine, "begin", _sqlite_on_begin)
        else:
            engine = sa.create_engine(
                parsed, pool_pre_ping=True, connect_args={"connect_timeout": CONNECT_TIMEOUT_S}
            )
    except ImportError as exc:
        raise MissingDependencyError("psycopg", "postgres", "a PostgreSQL registry") from exc
    return Database(engine, backend)


def _parse(url: str) -> sa.URL:
    try:
        parsed = sa.make_url(url)
    except (sa_exc.ArgumentError, ValueError) as exc:
        raise ConfigError(
            f"database URL {url!r} is not a SQLAlchemy URL", hint=f"use {ACCEPTED_URLS}"
        ) from exc
    shown = parsed.render_as_string(hide_password=True)
    if parsed.drivername == "postgresql":
        # SQLAlchemy's default PostgreSQL driver is psycopg2; edgeloop ships psycopg 3.
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername not in ("sqlite", "sqlite+pysqlite", "postgresql+psycopg"):
        raise ConfigError(
            f"database URL {shown!r} names driver {parsed.drivername!r}, which the registry "
            "does not support",
            hint=f"use {ACCEPTED_URLS}",
        )
    if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise ConfigError(
            f"database URL {shown!r} is an in-memory SQLite database, which each connection "
            "would see empty",
            hint=f"give a file ({ACCEPTED_URLS}); for a throw-away store use MemoryModelStore",
        )
    return parsed


def _sqlite_on_connect(dbapi_conn: Any, _record: Any) -> None:
    # Autocommit at the driver level: the "begin" hook below emits BEGIN itself, because
    # Python's sqlite3 would otherwise start transactions late and always DEFERRED.
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    try:
        for pragma in _SQLITE_PRAGMAS:
            cursor.execute(f"PRAGMA {pragma}")
        mode = cursor.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        cursor.close()
    if str(mode).lower() != "wal":
        raise StoreError(
            f"SQLite refused journal_mode=WAL (it stayed {mode!r})",
            hint="keep the registry database on a local disk, not a network share",
        )


def _sqlite_on_begin(conn: sa.Connection) -> None:
    write = conn.get_execution_options().get(_WRITE_OPTION, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
