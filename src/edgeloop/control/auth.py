"""Who may call what: the admin token, one-time enrollment tokens and per-node tokens.

Every token is 32 random bytes (URL-safe base64, ``secrets.token_urlsafe``); only its SHA-256
is stored, so a copy of the database gives no usable credential. A presented token is hashed
and compared with ``hmac.compare_digest`` (constant time); node tokens are looked up by their
hash, which tells an observer nothing about a 256-bit secret.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import sqlalchemy as sa

from edgeloop.control import tables
from edgeloop.core.errors import ConfigError, EdgeError
from edgeloop.registry import tuf_store
from edgeloop.registry.database import Database

ADMIN_ENV = "EDGELOOP_ADMIN_TOKEN"
DEFAULT_ENROLL_TTL_S = 3600


class UnauthorizedError(EdgeError):
    """No credential, or one that is wrong or expired (HTTP 401)."""

    exit_code: ClassVar[int] = 13
    http_status: ClassVar[int] = 401


class ForbiddenError(EdgeError):
    """A valid credential used on something it does not cover (HTTP 403)."""

    exit_code: ClassVar[int] = 13
    http_status: ClassVar[int] = 403


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def same(token: str, expected_hash: str) -> bool:
    """Whether ``token`` hashes to ``expected_hash`` (constant-time comparison)."""
    return hmac.compare_digest(token_hash(token), expected_hash)


def bearer(header: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header.

    Raises:
        UnauthorizedError: no header, or not a bearer token.
    """
    if not header:
        raise UnauthorizedError(
            "this call needs a credential and none was sent",
            hint="send 'Authorization: Bearer <token>' (the admin token, or the node's token)",
        )
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthorizedError(
            f"the Authorization header uses scheme {scheme!r}; expected 'Bearer <token>'",
            hint="send 'Authorization: Bearer <token>'",
        )
    return token.strip()


def admin_token(folder: Path, given: str | None) -> str:
    """The admin token: ``given`` (flag or environment), else ``folder/admin.token``, created
    once (mode 0600) by whichever process gets there first.

    Raises:
        ConfigError: the token is too short, or the file cannot be written or read.
    """
    token = given if given else os.environ.get(ADMIN_ENV) or None
    if token is not None:
        if len(token) < 16:
            raise ConfigError(
                f"the admin token is {len(token)} characters; expected at least 16",
                hint="leave --admin-token out to have a random one created",
            )
        return token
    path = folder / "admin.token"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_admin(path)
    except OSError as exc:
        raise ConfigError(f"cannot write {str(path)!r}: {exc.strerror}") from exc
    token = new_token()
    with os.fdopen(fd, "w") as out:
        out.write(token + "\n")
        out.flush()
        os.fsync(out.fileno())
    return token


def _read_admin(path: Path) -> str:
    for _ in range(50):  # another process created it and may still be writing its line
        text = path.read_text().strip()
        if text:
            return text
        time.sleep(0.02)
    raise ConfigError(f"admin token file {str(path)!r} is empty", hint="delete it and restart")


@dataclass(frozen=True, slots=True)
class Enrollment:
    """What an enrollment token grants the node that uses it."""

    labels: dict[str, str]
    tier: int | None
    parent: str | None


def create_enrollment_token(
    db: Database, enrollment: Enrollment, ttl_s: int = DEFAULT_ENROLL_TTL_S
) -> tuple[str, float]:
    """A new one-time enrollment token and its expiry (Unix seconds)."""
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int) or not 1 <= ttl_s <= 30 * 86400:
        raise ConfigError(
            f"ttl_s {ttl_s!r} is not valid; expected 1 to {30 * 86400} seconds",
            hint="enrollment tokens live an hour by default",
        )
    token, now = new_token(), time.time()

    def run() -> None:
        with db.write() as conn:
            conn.execute(
                tables.enrollment_tokens.insert().values(
                    token_hash=token_hash(token),
                    labels=json.dumps(enrollment.labels),
                    tier=enrollment.tier,
                    parent=enrollment.parent,
                    created_at=now,
                    expires_at=now + ttl_s,
                )
            )

    tuf_store.guarded(db, "creating an enrollment token", run)
    return token, now + ttl_s


def consume_enrollment_token(conn: sa.Connection, token: str, node_id: str) -> Enrollment:
    """Mark ``token`` used by ``node_id`` inside the caller's transaction (one use only).

    Raises:
        UnauthorizedError: unknown, already used or expired.
    """
    digest, now = token_hash(token), time.time()
    row = conn.execute(
        sa.select(tables.enrollment_tokens).where(tables.enrollment_tokens.c.token_hash == digest)
    ).first()
    if row is None or not same(token, row.token_hash):
        raise UnauthorizedError(
            "the enrollment token is not valid",
            hint="ask the admin for a new one: POST /api/v1/enrollment-tokens",
        )
    # The conditional UPDATE is the single-use guarantee: of two racing enrollments with one
    # token, exactly one sees a changed row.
    used = conn.execute(
        tables.enrollment_tokens.update()
        .where(
            tables.enrollment_tokens.c.token_hash == digest,
            tables.enrollment_tokens.c.used_at.is_(None),
            tables.enrollment_tokens.c.expires_at > now,
        )
        .values(used_at=now, node_id=node_id)
    )
    if used.rowcount != 1:
        why = "was already used" if row.used_at is not None else "has expired"
        raise UnauthorizedError(
            f"the enrollment token {why}",
            hint="enrollment tokens are single-use and expire; ask the admin for a new one",
        )
    labels: dict[str, Any] = json.loads(row.labels)
    return Enrollment({str(k): str(v) for k, v in labels.items()}, row.tier, row.parent)
