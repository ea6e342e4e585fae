"""``SqlModelStore``: the ``ModelStore`` on SQLAlchemy, SQLite by default, PostgreSQL at scale.

Version numbers come from a per-name counter row (``registry_models.last_version``) bumped in
the same transaction that inserts the version, so concurrent writers - threads, processes or
control-plane replicas on one database - never get the same number:

- PostgreSQL: ``UPDATE ... RETURNING`` row-locks the counter; a second writer waits for the
  first to commit and then reads its number. Two writers creating the first version of a name
  collide on the primary key; the loser retries.
- SQLite: writes open with ``BEGIN IMMEDIATE``, taking the database write lock up front (a
  deferred transaction that reads first can fail to upgrade its lock in WAL mode).

SQLite runs with ``journal_mode=WAL`` (readers never block the writer) and ``synchronous=FULL``
(a committed version survives power loss; WAL's default NORMAL may lose the last commits).
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from edgeloop.core.errors import ConflictError, StoreError
from edgeloop.core.types import Manifest, ModelRef
from edgeloop.registry.artifacts import check_sha256
from edgeloop.registry.database import connect
from edgeloop.registry.store import (
    ModelVersion,
    manifest_from_json,
    manifest_to_json,
    not_found,
    require_version,
    utc_now,
    version_taken,
)

T = TypeVar("T")

_ATTEMPTS = 8  # retries of a version-number race; each loser waits a little longer

_metadata = sa.MetaData()
models = sa.Table(
    "registry_models",
    _metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("last_version", sa.Integer, nullable=False),
)
versions = sa.Table(
    "registry_versions",
    _metadata,
    sa.Column("name", sa.String(128), sa.ForeignKey("registry_models.name"), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("manifest", sa.Text, nullable=False),
    sa.Column("artifact_sha256", sa.String(64), nullable=False, index=True),
    sa.Column("size_bytes", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    # The parent ref, pulled out of the manifest so lineage queries use an index.
    sa.Column("parent_name", sa.String(128), nullable=True),
    sa.Column("parent_version", sa.Integer, nullable=True),
    sa.Index("ix_registry_versions_parent", "parent_name", "parent_version"),
)


class SqlModelStore:
    """A ``ModelStore`` in a SQL database named by a SQLAlchemy URL; tables created if missing.

    Raises (constructor):
        ConfigError: the URL is malformed or names an unsupported database.
        MissingDependencyError: the database driver is not installed.
        StoreError: the database cannot be reached or its tables cannot be created.
    """

    def __init__(self, url: str) -> None:
        self._db = connect(url)
        self.url = self._db.display_url
        self._guarded("opening the registry", self._create_tables)

    def __repr__(self) -> str:
        return f"SqlModelStore({self.url!r})"

    @property
    def engine(self) -> sa.Engine:
        """The SQLAlchemy engine (for diagnostics and for services sharing the database)."""
        return self._db.engine

    def _create_tables(self) -> None:
        try:
            _metadata.create_all(self.engine)
        except sa_exc.DBAPIError:
            # Another process may have created them between our check and our CREATE.
            _metadata.create_all(self.engine)

    def add(
        self, manifest: Manifest, artifact_sha256: str, size_bytes: int, version: int | None = None
    ) -> ModelVersion:
        """Register the next version of ``manifest.name`` (exactly ``version`` when given) in
        one transaction.

        Raises:
            ConfigError: a malformed sha256, a negative size, or a manifest that is not JSON.
            ConflictError: the version-number race was lost ``_ATTEMPTS`` times in a row, or
                ``version`` is not above every number the name ever had.
            StoreError: the database failed or refused the row.
        """
        check_sha256(artifact_sha256)
        text = manifest_to_json(manifest)
        attempt = 1
        while True:
            try:
                return self._add_once(manifest, text, artifact_sha256, size_bytes, version)
            except sa_exc.DBAPIError as exc:
                if attempt >= _ATTEMPTS or not self._db.is_race(exc):
                    raise self._translate(exc, f"adding a version of {manifest.name!r}") from exc
            time.sleep(0.005 * attempt)
            attempt += 1

    def _add_once(
        self, manifest: Manifest, text: str, sha: str, size: int, wanted: int | None
    ) -> ModelVersion:
        with self._db.write() as conn:
            version = _claim(conn, manifest.name, wanted)
            value = ModelVersion(manifest.name, version, manifest, sha, size, utc_now())
            parent = manifest.parent
            conn.execute(
                versions.insert().values(
                    name=value.name,
                    version=value.version,
                    manifest=text,
                    artifact_sha256=sha,
                    size_bytes=size,
                    created_at=value.created_at,
                    parent_name=None if parent is None else parent.name,
                    parent_version=None if parent is None else parent.version,
                )
            )
        return value

    def get(self, ref: ModelRef) -> ModelVersion:
        """The version ``ref`` names, the latest when it names none.

        Raises:
            NotFoundError: naming ``ref`` and the names / versions that exist.
            StoreError: the database failed.
        """
        return self._guarded(f"reading {str(ref)!r}", lambda: self._get(ref))

    def _get(self, ref: ModelRef) -> ModelVersion:
        query = sa.select(versions).where(versions.c.name == ref.name)
        if ref.version is None:
            query = query.order_by(versions.c.version.desc()).limit(1)
        else:
            query = query.where(versions.c.version == ref.version)
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
            if row is None:
                raise not_found(ref, self._known(conn, ref.name))
        return _value(row)

    def list(self, name: str | None = None) -> builtins.list[ModelVersion]:
        """All versions, or those of ``name``, ordered by name then version.

        Raises:
            StoreError: the database failed.
        """
        query = sa.select(versions).order_by(versions.c.name, versions.c.version)
        if name is not None:
            query = query.where(versions.c.name == name)
        return self._rows("listing all versions" if name is None else f"listing {name!r}", query)

    def remove(self, ref: ModelRef) -> ModelVersion:
        """Delete version ``ref`` and return it.

        Raises:
            ConfigError: ``ref`` carries no version.
            NotFoundError: no such version.
            StoreError: the database failed.
        """
        version = require_version(ref, "removing a model version")
        key = (versions.c.name == ref.name) & (versions.c.version == version)

        def run() -> ModelVersion:
            with self._db.write() as conn:
                row = conn.execute(sa.select(versions).where(key)).first()
                if row is None:
                    raise not_found(ref, self._known(conn, ref.name))
                conn.execute(versions.delete().where(key))
            return _value(row)

        return self._guarded(f"removing {str(ref)!r}", run)

    def children(self, ref: ModelRef) -> builtins.list[ModelVersion]:
        """Versions derived from ``ref`` (the latest when it names no version).

        Raises:
            NotFoundError: ``ref`` does not exist.
            StoreError: the database failed.
        """
        target = self.get(ref)
        query = (
            sa.select(versions)
            .where(versions.c.parent_name == target.name)
            .where(versions.c.parent_version == target.version)
            .order_by(versions.c.name, versions.c.version)
        )
        return self._rows(f"listing children of {str(target.ref)!r}", query)

    def references(self, sha256: str) -> int:
        """How many versions use artifact ``sha256``.

        Raises:
            ConfigError: ``sha256`` is not a sha256 digest.
            StoreError: the database failed.
        """
        check_sha256(sha256)
        query = sa.select(sa.func.count()).where(versions.c.artifact_sha256 == sha256)

        def run() -> int:
            with self.engine.connect() as conn:
                return int(conn.execute(query).scalar_one())

        return self._guarded(f"counting references to {sha256}", run)

    def close(self) -> None:
        """Close pooled connections."""
        self.engine.dispose()

    def _rows(self, action: str, query: sa.Select[Any]) -> builtins.list[ModelVersion]:
        def run() -> builtins.list[ModelVersion]:
            with self.engine.connect() as conn:
                return [_value(row) for row in conn.execute(query)]

        return self._guarded(action, run)

    def _known(self, conn: sa.Connection, name: str) -> dict[str, builtins.list[int]]:
        """What exists, for a not-found message: the versions of ``name``, else all names."""
        numbers = conn.execute(sa.select(versions.c.version).where(versions.c.name == name))
        mine = [int(v) for v in numbers.scalars()]
        if mine:
            return {name: mine}
        names = conn.execute(sa.select(versions.c.name).distinct()).scalars()
        return {str(n): [] for n in names}

    def _guarded(self, action: str, run: Callable[[], T]) -> T:
        try:
            return run()
        except sa_exc.SQLAlchemyError as exc:
            raise self._translate(exc, action) from exc

    def _translate(self, exc: sa_exc.SQLAlchemyError, action: str) -> StoreError | ConflictError:
        return self._db.translate(exc, action, "registry")


def _value(row: sa.Row[Any]) -> ModelVersion:
    created: datetime = row.created_at
    # SQLite hands back naive datetimes (stored as UTC); PostgreSQL aware ones in its time zone.
    created = created.replace(tzinfo=UTC) if created.tzinfo is None else created.astimezone(UTC)
    return ModelVersion(
        name=row.name,
        version=int(row.version),
        manifest=manifest_from_json(row.manifest),
        artifact_sha256=row.artifact_sha256,
        size_bytes=int(row.size_bytes),
        created_at=created,
    )


def _claim(conn: sa.Connection, name: str, wanted: int | None) -> int:
    """Take ``name``'s next number (or ``wanted``) on its counter row, in ``conn``'s transaction.

    The conditional UPDATE row-locks the counter, so a concurrent writer that took ``wanted``
    first leaves no row to match here; two writers creating the name collide on its primary key
    (a race the caller retries). On PostgreSQL (read committed) the counter row can also appear
    between the UPDATE and the SELECT, created by a writer that committed meanwhile: then the
    UPDATE is tried again, and sees it.
    """
    query = models.update().where(models.c.name == name)
    if wanted is None:
        query = query.values(last_version=models.c.last_version + 1)
    else:
        query = query.where(models.c.last_version < wanted).values(last_version=wanted)
    taken = conn.execute(query.returning(models.c.last_version)).scalar_one_or_none()
    if taken is not None:
        return int(taken)
    last = conn.execute(
        sa.select(models.c.last_version).where(models.c.name == name)
    ).scalar_one_or_none()
    if last is None:
        first = 1 if wanted is None else wanted
        conn.execute(models.insert().values(name=name, last_version=first))
        return first
    if wanted is None or int(last) < wanted:  # created since the UPDATE looked: look again
        return _claim(conn, name, wanted)
    raise version_taken(name, wanted, int(last))
