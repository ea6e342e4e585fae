"""The fleet: enrolled nodes, their labels, device class, last report and desired revision."""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from edgeloop.control import auth, backlog_store, tables
from edgeloop.core.errors import ConfigError, NotFoundError
from edgeloop.registry import tuf_store
from edgeloop.registry.database import Database

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_ARCH = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64", "armv8": "aarch64"}
# Accelerator words in the capability probe, most specific first.
_ACCEL = (("cuda", "cuda"), ("nvidia", "cuda"), ("tensorrt", "cuda"), ("edgetpu", "tpu"),
          ("tpu", "tpu"), ("npu", "npu"), ("openvino", "gpu"), ("gpu", "gpu"))  # fmt: skip


def iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


def device_class(capabilities: Mapping[str, Any]) -> str:
    """``<arch>-<accel>`` from the agent's capability probe, e.g. ``x86_64-cpu``."""
    arch = str(capabilities.get("arch") or "unknown").lower()
    arch = _ARCH.get(arch, arch)
    words = " ".join(
        json.dumps(capabilities.get(key) or []).lower() for key in ("accelerators", "providers")
    )
    accel = next((kind for word, kind in _ACCEL if word in words), "cpu")
    return f"{re.sub(r'[^a-z0-9_]', '_', arch)}-{accel}"


def check_labels(labels: Any) -> dict[str, str]:
    if not isinstance(labels, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str | int | float) for k, v in labels.items()
    ):
        raise ConfigError(
            f"labels {labels!r} are not valid; expected an object of string keys and values",
            hint='e.g. {"site": "a", "line": "3"}',
        )
    return {k: str(v) for k, v in labels.items()}


def enroll(
    db: Database, token: str, name: str, capabilities: Mapping[str, Any], agent_url: str | None
) -> tuple[str, str]:
    """Enroll a node with a one-time token; returns ``(node_id, node_token)``.

    Raises:
        ConfigError: a bad name or capabilities. UnauthorizedError: a bad token.
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(
            f"node name {name!r} is not valid",
            hint="use 1-128 letters, digits, '.', '_' or '-'",
        )
    if not isinstance(capabilities, Mapping):
        raise ConfigError(f"capabilities {capabilities!r} are not an object")
    node_id, node_token = f"node-{secrets.token_hex(6)}", auth.new_token()

    def run() -> None:
        with db.write() as conn:
            grant = auth.consume_enrollment_token(conn, token, node_id)
            conn.execute(
                tables.nodes.insert().values(
                    node_id=node_id,
                    name=name,
                    token_hash=auth.token_hash(node_token),
                    labels=json.dumps(grant.labels),
                    tier=grant.tier,
                    parent=grant.parent,
                    capabilities=json.dumps(dict(capabilities)),
                    device_class=device_class(capabilities),
                    agent_url=agent_url,
                    enrolled_at=time.time(),
                    desired_revision=0,
                )
            )

    tuf_store.guarded(db, f"enrolling node {name!r}", run)
    return node_id, node_token


def node_of_token(db: Database, token: str) -> str | None:
    """The node whose token ``token`` is, or None."""
    digest = auth.token_hash(token)

    def run() -> Any:
        with db.engine.connect() as conn:
            query = sa.select(tables.nodes.c.node_id, tables.nodes.c.token_hash)
            return conn.execute(query.where(tables.nodes.c.token_hash == digest)).first()

    row = tuf_store.guarded(db, "checking a node token", run)
    if row is None or not auth.same(token, row.token_hash):
        return None
    return str(row.node_id)


_CREDENTIAL = sa.select(
    tables.nodes.c.node_id, tables.nodes.c.token_hash, tables.nodes.c.desired_revision
).where(tables.nodes.c.token_hash == sa.bindparam("digest"))
_REVISION = sa.select(tables.nodes.c.desired_revision).where(
    tables.nodes.c.node_id == sa.bindparam("node_id")
)


# The same read for many tokens at once (PostgreSQL: one query answers every poll waiting).
CREDENTIALS = sa.select(
    tables.nodes.c.node_id, tables.nodes.c.token_hash, tables.nodes.c.desired_revision
).where(tables.nodes.c.token_hash == sa.any_(sa.bindparam("digests")))


def credential(conn: sa.Connection, token: str) -> tuple[str, int] | None:
    """``(node_id, desired_revision)`` of the node whose token ``token`` is, or None: the token
    check and the poll's answer in one indexed read (the desired document is not loaded)."""
    row = conn.execute(_CREDENTIAL, {"digest": auth.token_hash(token)}).first()
    return None if row is None else checked(token, tuple(row))


def checked(token: str, row: tuple[Any, ...] | None) -> tuple[str, int] | None:
    """``(node_id, desired_revision)`` from a credential row ``(node_id, token_hash,
    desired_revision)`` if ``token`` hashes to its stored hash (constant time), else None."""
    if row is None or not auth.same(token, str(row[1])):
        return None
    return str(row[0]), int(row[2])


def revision(conn: sa.Connection, node_id: str) -> int:
    """The node's desired revision. Raises NotFoundError."""
    found = conn.execute(_REVISION, {"node_id": node_id}).scalar()
    if found is None:
        raise NotFoundError(
            f"node {node_id!r} is not enrolled", hint="GET /api/v1/nodes lists them"
        )
    return int(found)


def get(conn: sa.Connection, node_id: str) -> sa.Row[Any]:
    row = conn.execute(sa.select(tables.nodes).where(tables.nodes.c.node_id == node_id)).first()
    if row is None:
        raise NotFoundError(
            f"node {node_id!r} is not enrolled", hint="GET /api/v1/nodes lists them"
        )
    return row


def rows(conn: sa.Connection) -> list[sa.Row[Any]]:
    query = sa.select(tables.nodes).order_by(tables.nodes.c.enrolled_at, tables.nodes.c.node_id)
    return list(conn.execute(query))


def to_dict(row: sa.Row[Any]) -> dict[str, Any]:
    """A node as the API shows it."""
    return {
        "node_id": row.node_id,
        "name": row.name,
        "labels": json.loads(row.labels),
        "tier": row.tier,
        "parent": row.parent,
        "device_class": row.device_class,
        "capabilities": json.loads(row.capabilities),
        "agent_url": row.agent_url,
        "enrolled_at": iso(row.enrolled_at),
        "last_seen": iso(row.last_seen),
        "reported": None if row.reported is None else json.loads(row.reported),
        "desired_revision": int(row.desired_revision),
    }


def patch(db: Database, node_id: str, changes: Mapping[str, Any]) -> None:
    """Change a node's labels, tier or parent.

    Raises:
        ConfigError: an unknown key or bad value. NotFoundError: no such node.
    """
    unknown = set(changes) - {"labels", "tier", "parent"}
    if unknown:
        raise ConfigError(
            f"cannot change {sorted(unknown)} of a node", hint="change labels, tier or parent"
        )
    values: dict[str, Any] = {}
    if "labels" in changes:
        values["labels"] = json.dumps(check_labels(changes["labels"]))
    if "tier" in changes:
        tier = changes["tier"]
        if tier is not None and (not isinstance(tier, int) or isinstance(tier, bool) or tier < 0):
            raise ConfigError(f"tier {tier!r} is not valid; expected an integer >= 0 or null")
        values["tier"] = tier
    if "parent" in changes:
        values["parent"] = None if changes["parent"] is None else str(changes["parent"])

    def run() -> None:
        with db.write() as conn:
            get(conn, node_id)
            if values:
                conn.execute(
                    tables.nodes.update().where(tables.nodes.c.node_id == node_id).values(values)
                )

    tuf_store.guarded(db, f"changing node {node_id!r}", run)


def check_report(report: Mapping[str, Any]) -> str:
    """The report as stored (JSON text). Raises ConfigError for a bad revision."""
    revision = report.get("revision")
    if not isinstance(revision, int) or revision < 0:
        raise ConfigError(
            f"report revision {revision!r} is not valid; expected an integer >= 0",
            hint="report the deployment revision the agent has acted on (0 before any)",
        )
    return json.dumps(dict(report))


def store_report(conn: sa.Connection, node_id: str, text: str, now: float) -> None:
    """Write a checked report (:func:`check_report`) and ``last_seen`` in ``conn``."""
    conn.execute(
        tables.nodes.update()
        .where(tables.nodes.c.node_id == node_id)
        .values(reported=text, last_seen=now, **backlog_store.totals(text, now))
    )


def record_report(db: Database, node_id: str, report: Mapping[str, Any]) -> None:
    """Store ``report`` as the node's reported state and update ``last_seen``."""
    text = check_report(report)

    def run() -> None:
        with db.write() as conn:
            store_report(conn, node_id, text, time.time())

    tuf_store.guarded(db, f"recording the report of {node_id!r}", run)


def matches(row: sa.Row[Any], selector: Mapping[str, Any]) -> bool:
    """Whether the node has every label of ``selector["labels"]`` (empty: every node) and, when
    the selector names ``nodes`` (node ids: an experiment's), is one of them."""
    if "nodes" in selector and row.node_id not in selector["nodes"]:
        return False
    labels = json.loads(row.labels)
    wanted = selector.get("labels") or {}
    return all(labels.get(k) == str(v) for k, v in wanted.items())
