"""The two ``DatasetStore`` backends: in memory (tests, demos) and SQL (SQLite, PostgreSQL).

The SQL table lives in the registry's database beside the model tables. Its primary key
(name, version) and the unique (name, content_hash) pair make the rules of the contract hold
under concurrent writers too: a version number is taken as max + 1 inside a write transaction
(``BEGIN IMMEDIATE`` on SQLite; on PostgreSQL two writers collide on the primary key and the
loser retries), and identical content under one name can never be stored twice. Rows are never
updated or deleted, and no number is reused.
"""

from __future__ import annotations

import builtins
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from edgeloop.core.errors import ConflictError, StoreError
from edgeloop.registry.database import connect
from edgeloop.registry.datasets import (
    DatasetEntry,
    DatasetRef,
    DatasetVersion,
    duplicate,
    entry_from_row,
    not_found,
)
from edgeloop.registry.store import utc_now

T = TypeVar("T")
_ATTEMPTS = 8

_metadata = sa.MetaData()
datasets = sa.Table(
    "registry_datasets",
    _metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("content_hash", sa.String(64), nullable=False),
    sa.Column("size_bytes", sa.BigInteger, nullable=False),
    sa.Column("samples", sa.Integer, nullable=False),
    sa.Column("sample_shape", sa.Text, nullable=False),
    sa.Column("classes", sa.Text, nullable=False),
    sa.Column("modality", sa.String(16), nullable=False),
    sa.Column("labelled", sa.Integer, nullable=False),
    sa.Column("provenance", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("name", "content_hash", name="uq_registry_datasets_content"),
)


class MemoryDatasetStore:
    """A ``DatasetStore`` in a dict; lost when the process ends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: dict[tuple[str, int], DatasetVersion] = {}

    def add(self, entry: DatasetEntry) -> DatasetVersion:
        """Store the next version of ``entry.name``. Raises ConflictError for held content."""
        with self._lock:
            mine = [v for (n, _), v in self._rows.items() if n == entry.name]
            for v in mine:
                if v.entry.content_hash == entry.content_hash:
                    raise duplicate(entry, v.version)
            value = DatasetVersion(entry, max((v.version for v in mine), default=0) + 1, utc_now())
            self._rows[(entry.name, value.version)] = value
        return value

    def get(self, ref: DatasetRef) -> DatasetVersion:
        """The version ``ref`` names (the latest without one). Raises NotFoundError."""
        with self._lock:
            mine = sorted(v for (n, v) in self._rows if n == ref.name)
            wanted = (mine[-1] if mine else None) if ref.version is None else ref.version
            found = None if wanted is None else self._rows.get((ref.name, wanted))
            if found is None:
                known: dict[str, list[int]] = {}
                for n, v in self._rows:
                    known.setdefault(n, []).append(v)
                raise not_found(ref, known)
            return found

    def list(self, name: str | None = None) -> builtins.list[DatasetVersion]:
        """All versions, or those of ``name``, ordered by name then version."""
        with self._lock:
            keys = sorted(k for k in self._rows if name is None or k[0] == name)
            return [self._rows[k] for k in keys]

    def close(self) -> None:
        """Nothing to release."""


class SqlDatasetStore:
    """A ``DatasetStore`` in the registry's SQL database (table created if missing).

    Raises (constructor): ConfigError / MissingDependencyError for the URL, StoreError when the
    database cannot be reached.
    """

    def __init__(self, url: str) -> None:
        self._db = connect(url)
        self.url = self._db.display_url
        self._guarded("opening the data set store", self._create_tables)

    def __repr__(self) -> str:
        return f"SqlDatasetStore({self.url!r})"

    def _create_tables(self) -> None:
        try:
            self._create_all()
        except sa_exc.DBAPIError:  # another process created it between check and CREATE
            self._create_all()

    def _create_all(self) -> None:
        # In a write transaction: on SQLite it takes the write lock first and waits for other
        # writers (busy timeout); a read that upgrades to a write fails at once instead
        # ("database is locked", seen while agents' telemetry was being committed).
        with self._db.write() as conn:
            _metadata.create_all(conn)

    def add(self, entry: DatasetEntry) -> DatasetVersion:
        """Store the next version of ``entry.name`` in one transaction.

        Raises:
            ConflictError: the name already holds this content, or the number race was lost
                ``_ATTEMPTS`` times in a row.
            StoreError: the database failed.
        """
        attempt = 1
        while True:
            try:
                return self._add_once(entry)
            except sa_exc.DBAPIError as exc:
                if attempt >= _ATTEMPTS or not self._db.is_race(exc):
                    raise self._translate(exc, f"adding a version of {entry.name!r}") from exc
            time.sleep(0.005 * attempt)
            attempt += 1

    def _add_once(self, entry: DatasetEntry) -> DatasetVersion:
        with self._db.write() as conn:
            held = conn.execute(
                sa.select(datasets.c.version)
                .where(datasets.c.name == entry.name)
                .where(datasets.c.content_hash == entry.content_hash)
            ).scalar_one_or_none()
            if held is not None:
                raise duplicate(entry, int(held))
            last = conn.execute(
                sa.select(sa.func.max(datasets.c.version)).where(datasets.c.name == entry.name)
            ).scalar_one_or_none()
            value = DatasetVersion(entry, int(last or 0) + 1, utc_now())
            conn.execute(
                datasets.insert().values(
                    name=entry.name,
                    version=value.version,
                    content_hash=entry.content_hash,
                    size_bytes=entry.size_bytes,
                    samples=entry.samples,
                    modality=entry.modality.value,
                    labelled=entry.labelled,
                    created_at=value.created_at,
                    **entry.to_json(),
                )
            )
        return value

    def get(self, ref: DatasetRef) -> DatasetVersion:
        """The version ``ref`` names (the latest without one).

        Raises:
            NotFoundError: naming what exists.
            StoreError: the database failed.
        """
        query = sa.select(datasets).where(datasets.c.name == ref.name)
        if ref.version is None:
            query = query.order_by(datasets.c.version.desc()).limit(1)
        else:
            query = query.where(datasets.c.version == ref.version)

        def run() -> DatasetVersion:
            with self._db.engine.connect() as conn:
                row = conn.execute(query).first()
                if row is None:
                    rows = conn.execute(sa.select(datasets.c.name, datasets.c.version))
                    known: dict[str, list[int]] = {}
                    for name, version in rows:
                        known.setdefault(str(name), []).append(int(version))
                    raise not_found(ref, known)
            return _value(row)

        return self._guarded(f"reading data set {str(ref)!r}", run)

    def list(self, name: str | None = None) -> builtins.list[DatasetVersion]:
        """All versions, or those of ``name``, ordered by name then version (StoreError)."""
        query = sa.select(datasets).order_by(datasets.c.name, datasets.c.version)
        if name is not None:
            query = query.where(datasets.c.name == name)

        def run() -> builtins.list[DatasetVersion]:
            with self._db.engine.connect() as conn:
                return [_value(row) for row in conn.execute(query)]

        return self._guarded("listing data sets", run)

    def close(self) -> None:
        self._db.engine.dispose()

    def _guarded(self, action: str, run: Callable[[], T]) -> T:
        try:
            return run()
        except sa_exc.SQLAlchemyError as exc:
            raise self._translate(exc, action) from exc

    def _translate(self, exc: sa_exc.SQLAlchemyError, action: str) -> StoreError | ConflictError:
        return self._db.translate(exc, action, "data set store")


def _value(row: sa.Row[Any]) -> DatasetVersion:
    created: datetime = row.created_at
    # SQLite hands back naive datetimes (stored as UTC); PostgreSQL aware ones.
    created = created.replace(tzinfo=UTC) if created.tzinfo is None else created.astimezone(UTC)
    return DatasetVersion(entry_from_row(row._mapping), int(row.version), created)
