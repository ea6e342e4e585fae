"""Dashboard sessions: an opaque cookie, checked against the database on every request.

Signing in with a token (the admin's, or the read-only one: :mod:`.credentials`) creates a
session: 32 random bytes go to the browser as the cookie, only their SHA-256 is stored (a copy
of the database holds no usable cookie), with the role, a per-session CSRF token and an expiry.
Nothing in the cookie is trusted: a tampered or expired cookie finds no row and is refused.
The table lives in the control plane's database, so every replica knows every session, and
signing out deletes the row.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from edgeloop.control.auth import token_hash
from edgeloop.registry import tuf_store
from edgeloop.registry.database import Database

SESSION_TTL_S = 8 * 3600  # a working day; then sign in again

_meta = sa.MetaData()
sessions = sa.Table(
    "control_ui_sessions",
    _meta,
    sa.Column("session_hash", sa.String(64), primary_key=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("csrf", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False, index=True),
)


class Role(StrEnum):
    ADMIN = "admin"  # sees and acts
    READER = "read-only"  # sees everything, changes nothing


@dataclass(frozen=True, slots=True)
class Session:
    role: Role
    csrf: str
    expires_at: float

    @property
    def may_act(self) -> bool:
        return self.role is Role.ADMIN


# The fleet page's indexes: its keyset order, and the device-class filter in that order (a
# node's class is set at enrollment only, so the index costs the reports' hot path nothing).
_INDEXES = (
    ("ix_control_nodes_name", "name, node_id"),
    ("ix_control_nodes_class", "device_class, name, node_id"),
)


def create_table(db: Database) -> None:
    """The sessions table, and the fleet page's indexes on the nodes (``_INDEXES``)."""

    def run() -> None:
        try:
            _meta.create_all(db.engine)
        except sa_exc.DBAPIError:  # another replica created it between the check and ours
            _meta.create_all(db.engine)
        with db.write() as conn:
            for name, columns in _INDEXES:
                conn.execute(
                    sa.text(f"CREATE INDEX IF NOT EXISTS {name} ON control_nodes ({columns})")
                )

    tuf_store.guarded(db, "creating the dashboard's sessions table", run)


def start(db: Database, role: Role, ttl_s: float = SESSION_TTL_S) -> tuple[str, Session]:
    """A new session of ``role``: ``(cookie value, session)``; expired sessions are dropped."""
    cookie, now = secrets.token_urlsafe(32), time.time()
    session = Session(role, secrets.token_urlsafe(24), now + ttl_s)

    def run() -> None:
        with db.write() as conn:
            conn.execute(sessions.delete().where(sessions.c.expires_at < now))
            conn.execute(
                sessions.insert().values(
                    session_hash=token_hash(cookie),
                    role=role.value,
                    csrf=session.csrf,
                    created_at=now,
                    expires_at=session.expires_at,
                )
            )

    tuf_store.guarded(db, "starting a dashboard session", run)
    return cookie, session


_FIND = sa.select(sessions.c.role, sessions.c.csrf, sessions.c.expires_at).where(
    sessions.c.session_hash == sa.bindparam("digest")
)


def find(db: Database, cookie: str | None) -> Session | None:
    """The live session of ``cookie``, or None (none sent, unknown, tampered or expired)."""
    if not cookie or len(cookie) > 128:
        return None

    def run() -> Any:
        with db.engine.connect() as conn:
            return conn.execute(_FIND, {"digest": token_hash(cookie)}).first()

    row = tuf_store.guarded(db, "checking a dashboard session", run)
    if row is None or row.expires_at <= time.time():
        return None
    return Session(Role(row.role), row.csrf, float(row.expires_at))


def end(db: Database, cookie: str | None) -> None:
    """Forget the session of ``cookie`` (signing out)."""
    if not cookie:
        return

    def run() -> None:
        with db.write() as conn:
            conn.execute(sessions.delete().where(sessions.c.session_hash == token_hash(cookie)))

    tuf_store.guarded(db, "ending a dashboard session", run)
