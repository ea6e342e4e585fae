"""Alerts in the database (table ``control_alerts``): read, and one evaluation written.

:func:`gather` reads the monitoring rows, the fleet's nodes and the alerts firing (a read
transaction); :func:`decide` evaluates the rules (:mod:`edgeloop.control.alerts`, pure) and
:func:`write` stores what changed (a short write transaction: at 10,000 nodes the read and the
evaluation take a few hundred ms, which must not hold the writers' lock). Two replicas
evaluating at once may both open an alert for the same subject; the next evaluation resolves
the second (:func:`~edgeloop.control.alerts.reconcile`): never a lost alert.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from edgeloop.control import monitoring, tables
from edgeloop.control.alerts import (
    Alert,
    AlertState,
    Changes,
    NodeSeen,
    Rule,
    RuleKind,
    evaluate,
    reconcile,
)

_LIMIT = 1000


def _alert(r: sa.Row[Any]) -> Alert:
    return Alert(
        r.alert_id, r.rule, RuleKind(r.kind), r.subject, AlertState(r.state), r.first_seen,
        r.last_seen, r.resolved_at, json.loads(r.figures),
    )  # fmt: skip


def read(conn: sa.Connection, state: AlertState | None = None) -> list[Alert]:
    """Alerts, firing first, newest first (at most 1000)."""
    t = tables.alerts
    q = sa.select(t).order_by(t.c.state, t.c.last_seen.desc(), t.c.alert_id).limit(_LIMIT)
    if state is not None:
        q = q.where(t.c.state == state.value)
    return [_alert(r) for r in conn.execute(q)]


def nodes_seen(conn: sa.Connection) -> list[NodeSeen]:
    t = tables.nodes
    rows = conn.execute(sa.select(t.c.node_id, t.c.enrolled_at, t.c.last_seen))
    return [NodeSeen(r.node_id, r.enrolled_at, r.last_seen) for r in rows]


def _write(conn: sa.Connection, changes: Changes) -> None:
    t = tables.alerts
    if changes.opened:
        conn.execute(t.insert(), [_values(a) for a in changes.opened])
    for a in (*changes.kept, *changes.resolved):
        conn.execute(t.update().where(t.c.alert_id == a.alert_id).values(_values(a)))


def _values(a: Alert) -> dict[str, Any]:
    return {"alert_id": a.alert_id, "rule": a.rule, "kind": a.kind.value, "subject": a.subject,
            "state": a.state.value, "first_seen": a.first_seen, "last_seen": a.last_seen,
            "resolved_at": a.resolved_at, "figures": json.dumps(dict(a.figures))}  # fmt: skip


def evaluate_and_store(conn: sa.Connection, rules: Iterable[Rule], now: float) -> Changes:
    """One evaluation of ``rules``, read and written in ``conn``'s transaction; what changed
    (the tests' one-call form of :func:`gather` + :func:`decide` + :func:`write`)."""
    return write(conn, decide(gather(conn), rules, now))


Gathered = tuple[list[monitoring.FleetRow], list[NodeSeen], list[Alert]]


def gather(conn: sa.Connection) -> Gathered:
    """What an evaluation reads: monitoring rows, nodes, the alerts firing (a read
    transaction: the write lock is taken only by :func:`write`, for the changes alone)."""
    return monitoring.read(conn), nodes_seen(conn), read(conn, AlertState.FIRING)


def decide(gathered: Gathered, rules: Iterable[Rule], now: float) -> Changes:
    """The rules evaluated and reconciled with the alerts firing. Pure but for new ids."""
    rows, nodes, firing = gathered
    findings = evaluate(tuple(rules), rows, nodes, now)
    return reconcile(firing, findings, now, lambda: str(uuid.uuid4()))


def write(conn: sa.Connection, changes: Changes) -> Changes:
    """Store ``changes`` in ``conn``'s transaction; returns them."""
    _write(conn, changes)
    return changes


def firing_by_rule(conn: sa.Connection) -> dict[str, int]:
    t = tables.alerts
    q = sa.select(t.c.rule, sa.func.count()).where(t.c.state == "firing").group_by(t.c.rule)
    return {str(rule): int(n) for rule, n in conn.execute(q)}
