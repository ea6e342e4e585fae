"""Where the update repository keeps its state: three tables in the registry's database.

- ``tuf_metadata(role, version, bytes)``: every signed metadata file ever published. The primary
  key ``(role, version)`` makes a second, different file with the same version impossible.
- ``tuf_heads(role, version)``: the current version of each role. A publish locks these rows
  (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` takes the whole write
  lock), so concurrent publishers on one database run one after the other.
- ``tuf_blobs(path, sha256, length, data, file)``: where a target's bytes are: ``data`` inline
  (deployment documents, small) or ``file``, the path of an artifact in the artifact store.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from edgeloop.core.errors import ConflictError, StoreError
from edgeloop.registry.database import Database

T = TypeVar("T")

_ATTEMPTS = 8

metadata_obj = sa.MetaData()
tuf_metadata = sa.Table(
    "tuf_metadata",
    metadata_obj,
    sa.Column("role", sa.String(16), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("bytes", sa.LargeBinary, nullable=False),
)
tuf_heads = sa.Table(
    "tuf_heads",
    metadata_obj,
    sa.Column("role", sa.String(16), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
)
tuf_blobs = sa.Table(
    "tuf_blobs",
    metadata_obj,
    sa.Column("path", sa.String(512), primary_key=True),
    sa.Column("sha256", sa.String(64), primary_key=True),
    sa.Column("length", sa.BigInteger, nullable=False),
    sa.Column("data", sa.LargeBinary, nullable=True),
    sa.Column("file", sa.Text, nullable=True),
)


def create_tables(db: Database) -> None:
    """Create the repository's tables if missing (idempotent, safe against a racing creator)."""

    def run() -> None:
        try:
            metadata_obj.create_all(db.engine)
        except sa_exc.DBAPIError:
            metadata_obj.create_all(db.engine)  # another process created them meanwhile

    guarded(db, "creating the update repository tables", run)


def heads(conn: sa.Connection, *, lock: bool) -> dict[str, int]:
    """The current version of each role (empty before the repository exists)."""
    query = sa.select(tuf_heads.c.role, tuf_heads.c.version)
    if lock:
        query = query.with_for_update()
    return {str(r.role): int(r.version) for r in conn.execute(query)}


def read(conn: sa.Connection, role: str, version: int) -> bytes | None:
    """The bytes of ``role`` at ``version``, or None."""
    query = sa.select(tuf_metadata.c.bytes).where(
        tuf_metadata.c.role == role, tuf_metadata.c.version == version
    )
    found = conn.execute(query).scalar_one_or_none()
    return None if found is None else bytes(found)


def write(conn: sa.Connection, role: str, version: int, data: bytes, *, new: bool) -> None:
    """Insert ``role`` at ``version`` and make it the head."""
    conn.execute(tuf_metadata.insert().values(role=role, version=version, bytes=data))
    if new:
        conn.execute(tuf_heads.insert().values(role=role, version=version))
    else:
        conn.execute(tuf_heads.update().where(tuf_heads.c.role == role).values(version=version))


def put_blob(
    conn: sa.Connection, path: str, sha256: str, length: int, data: bytes | None, file: str | None
) -> None:
    """Record where the bytes of target ``path`` with ``sha256`` are (kept if already known)."""
    known = conn.execute(
        sa.select(tuf_blobs.c.sha256).where(tuf_blobs.c.path == path, tuf_blobs.c.sha256 == sha256)
    ).first()
    if known is None:
        conn.execute(
            tuf_blobs.insert().values(path=path, sha256=sha256, length=length, data=data, file=file)
        )


def get_blob(conn: sa.Connection, path: str, sha256: str) -> Any:
    """The row of target ``path`` with ``sha256`` (length, data, file), or None."""
    query = sa.select(tuf_blobs.c.length, tuf_blobs.c.data, tuf_blobs.c.file).where(
        tuf_blobs.c.path == path, tuf_blobs.c.sha256 == sha256
    )
    return conn.execute(query).first()


def retrying(db: Database, action: str, run: Callable[[], T]) -> T:
    """Run a write, retrying a lost race (two creators of the first rows on PostgreSQL)."""
    attempt = 1
    while True:
        try:
            return run()
        except sa_exc.DBAPIError as exc:
            if attempt >= _ATTEMPTS or not db.is_race(exc):
                raise translate(db, exc, action) from exc
        time.sleep(0.01 * attempt)
        attempt += 1


def guarded(db: Database, action: str, run: Callable[[], T]) -> T:
    """Run ``run``, turning a database error into a StoreError naming ``action``."""
    try:
        return run()
    except sa_exc.SQLAlchemyError as exc:
        raise translate(db, exc, action) from exc


def translate(db: Database, exc: sa_exc.SQLAlchemyError, action: str) -> StoreError | ConflictError:
    detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
    if isinstance(exc, sa_exc.DBAPIError) and db.is_race(exc):
        return ConflictError(
            f"{action} conflicts with a concurrent writer on {db.display_url}: {detail}",
            hint="run the command again",
        )
    return StoreError(
        f"{action} failed on database {db.display_url}: {detail}",
        hint="check that the database is reachable and writable (--db / EDGELOOP_DB)",
    )
