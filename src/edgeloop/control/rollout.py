"""Rollouts: an explicit, persisted state machine that moves a deployment through its waves.

``PENDING -> WAVE(i) -> SOAKING(i) -> WAVE(i+1) ... -> COMPLETED``; a guard breach in wave i
-> ``HALTED`` with wave i's nodes given back their previous document -> ``ROLLED_BACK`` once they
acted on it; ``PAUSED`` and back; a manual rollback from any state -> ``ROLLED_BACK``. The
allowed transitions are :data:`TRANSITIONS`, checked in :func:`_move`, each with an event row.

A tick is one write transaction holding the rollout's row lock (``FOR UPDATE``; SQLite's
``BEGIN IMMEDIATE`` locks the whole database). A second replica ticking the same rollout waits
for the lock and then decides on the state the first one committed, so a wave is never entered
twice. Only the nodes of waves actually entered ever get a document naming the new model.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any

import sqlalchemy as sa

from edgeloop.control import deployments as dep
from edgeloop.control import fleet, tables
from edgeloop.control.guard import NodeCheck, Verdict, check_node
from edgeloop.core.errors import ConfigError, ConflictError, NotFoundError


class State(StrEnum):
    PENDING = "PENDING"
    WAVE = "WAVE"
    SOAKING = "SOAKING"
    PAUSED = "PAUSED"
    HALTED = "HALTED"
    COMPLETED = "COMPLETED"
    ROLLED_BACK = "ROLLED_BACK"


S = State
TRANSITIONS: frozenset[tuple[State, State]] = frozenset(
    {
        (S.PENDING, S.WAVE),
        (S.WAVE, S.SOAKING),
        (S.SOAKING, S.WAVE),
        (S.SOAKING, S.COMPLETED),
        (S.WAVE, S.HALTED),
        (S.SOAKING, S.HALTED),
        (S.HALTED, S.ROLLED_BACK),
    }
    | {(s, S.PAUSED) for s in (S.PENDING, S.WAVE, S.SOAKING)}
    | {(S.PAUSED, s) for s in (S.PENDING, S.WAVE, S.SOAKING)}
    | {(s, S.ROLLED_BACK) for s in State}  # manual rollback, from anywhere
)
# States whose nodes are still being moved; a new rollout may not take them over.
ACTIVE = frozenset({S.PENDING, S.WAVE, S.SOAKING, S.PAUSED})
TICKING = frozenset({S.PENDING, S.WAVE, S.SOAKING, S.HALTED})


def _move(conn: sa.Connection, row: sa.Row[Any], new: State, detail: str, **values: Any) -> None:
    old = State(row.state)
    if (old, new) not in TRANSITIONS:
        allowed = sorted(n.value for o, n in TRANSITIONS if o is old)
        raise ConflictError(
            f"rollout {row.rollout_id} is {old}; it cannot go to {new}",
            hint=f"from {old} it can go to {', '.join(allowed) or 'nothing'}",
        )
    now = time.time()
    conn.execute(
        tables.rollouts.update()
        .where(tables.rollouts.c.rollout_id == row.rollout_id)
        .values(state=new.value, updated_at=now, **values)
    )
    event(conn, row.rollout_id, new, detail)


def event(conn: sa.Connection, rollout_id: str, state: State, detail: str) -> None:
    conn.execute(
        tables.rollout_events.insert().values(
            rollout_id=rollout_id, at=time.time(), state=state.value, detail=detail
        )
    )


def lock(conn: sa.Connection, rollout_id: str) -> sa.Row[Any]:
    """The rollout's row, locked until the transaction ends. Raises NotFoundError."""
    query = sa.select(tables.rollouts).where(tables.rollouts.c.rollout_id == rollout_id)
    row = conn.execute(query.with_for_update()).first()
    if row is None:
        raise NotFoundError(f"rollout {rollout_id!r} does not exist", hint="GET /api/v1/rollouts")
    return row


def create(
    conn: sa.Connection, spec: dep.DeploymentSpec, entries: Mapping[str, dict[str, Any]]
) -> str:
    """Insert a PENDING rollout of ``spec`` over the nodes it selects now.

    ``entries``: the document entry of each registry ref the spec names (by ``str(ref)``).

    Raises:
        ConfigError: the selector matches no node.
        ConflictError: a selected node is in another rollout still in progress.
    """
    selected = [r for r in fleet.rows(conn) if fleet.matches(r, spec.selector)]
    if not selected:
        raise ConfigError(
            f"deployment {spec.name!r} selects no node (selector {dict(spec.selector)})",
            hint="GET /api/v1/nodes shows the nodes and their labels",
        )
    _refuse_busy(conn, {r.node_id for r in selected}, but=None)
    waves = dep.compute_waves([r.node_id for r in selected], spec.plan.waves)
    nodes = {
        r.node_id: {
            "wave": i,
            "ref": str(spec.ref_for(r.device_class)),
            "revision": None,
            "previous": None,
            "reverted_revision": None,
        }
        for i, wave in enumerate(waves)
        for r in selected
        if r.node_id in wave
    }
    rollout_id = f"ro-{secrets.token_hex(6)}"
    now = time.time()
    body = {"spec": spec.to_dict(), "entries": dict(entries)}
    conn.execute(
        tables.rollouts.insert().values(
            rollout_id=rollout_id,
            name=spec.name,
            spec=json.dumps(body),
            state=S.PENDING.value,
            wave=0,
            phase_started_at=now,
            waves=json.dumps(waves),
            nodes=json.dumps(nodes),
            created_at=now,
            updated_at=now,
        )
    )
    sizes = [len(w) for w in waves]
    event(conn, rollout_id, S.PENDING, f"created: {len(nodes)} node(s) in waves of {sizes}")
    return rollout_id


def _refuse_busy(conn: sa.Connection, node_ids: set[str], but: str | None) -> None:
    """Raise ConflictError when one of ``node_ids`` is in a rollout still in progress."""
    busy = conn.execute(
        sa.select(tables.rollouts.c.rollout_id, tables.rollouts.c.nodes).where(
            tables.rollouts.c.state.in_([s.value for s in ACTIVE]),
            tables.rollouts.c.rollout_id != (but or ""),
        )
    )
    for other in busy:
        overlap = node_ids & set(json.loads(other.nodes))
        if overlap:
            raise ConflictError(
                f"nodes {sorted(overlap)} are in rollout {other.rollout_id}, still in progress",
                hint=f"wait for it, or POST /api/v1/rollouts/{other.rollout_id}/rollback",
            )


class _Rollout:
    """A locked rollout row, decoded; the tick's working copy."""

    def __init__(self, row: sa.Row[Any]) -> None:
        self.row = row
        self.id: str = row.rollout_id
        self.state = State(row.state)
        body = json.loads(row.spec)
        self.spec = dep.DeploymentSpec.from_dict(body["spec"])
        self.entries: dict[str, dict[str, Any]] = body["entries"]
        self.waves: list[list[str]] = json.loads(row.waves)
        self.nodes: dict[str, dict[str, Any]] = json.loads(row.nodes)

    def save_nodes(self, conn: sa.Connection) -> None:
        conn.execute(
            tables.rollouts.update()
            .where(tables.rollouts.c.rollout_id == self.id)
            .values(nodes=json.dumps(self.nodes))
        )

    def checks(self, conn: sa.Connection, wave: int) -> dict[str, NodeCheck]:
        result = {}
        for node_id in self.waves[wave]:
            info = self.nodes[node_id]
            report = _report(conn, node_id)
            sha = self.entries[info["ref"]]["sha256"]
            result[node_id] = check_node(report, int(info["revision"]), sha, self.spec.plan.guard)
        return result


def _names(conn: sa.Connection, node_ids: Iterable[str]) -> dict[str, str]:
    """Each node's name, as ``fleet nodes`` shows it (its id when it has none), in order."""
    wanted = list(node_ids)
    query = sa.select(tables.nodes.c.node_id, tables.nodes.c.name)
    known = {
        r.node_id: r.name for r in conn.execute(query.where(tables.nodes.c.node_id.in_(wanted)))
    }
    return {n: str(known.get(n) or n) for n in wanted}


def _report(conn: sa.Connection, node_id: str) -> dict[str, Any] | None:
    text = conn.execute(
        sa.select(tables.nodes.c.reported).where(tables.nodes.c.node_id == node_id)
    ).scalar_one_or_none()
    return None if text is None else dict(json.loads(text))


def _previous_doc(conn: sa.Connection, node_id: str) -> dict[str, Any] | None:
    text = conn.execute(
        sa.select(tables.nodes.c.desired).where(tables.nodes.c.node_id == node_id)
    ).scalar_one_or_none()
    return None if text is None else dict(json.loads(text))


def _restore(doc: Mapping[str, Any] | None) -> dep.Desired:
    """The desired state a node had before (no document: no model)."""
    if doc is None:
        return dep.Desired([], {}, 0.0, dep.Guard(), None, None)
    return dep.Desired(
        list(doc["models"]),
        dict(doc.get("serving") or {}),
        float(doc.get("watch_s") or 0.0),
        dep.Guard.from_dict(doc.get("guard") or {}),
        doc.get("rollout"),
        doc.get("wave"),
    )


def tick(conn: sa.Connection, repo: Any, rollout_id: str, now: float | None = None) -> State:
    """Advance ``rollout_id`` by at most one step, inside ``conn``'s write transaction."""
    now = time.time() if now is None else now
    ro = _Rollout(lock(conn, rollout_id))
    age = now - float(ro.row.phase_started_at)
    wave = int(ro.row.wave)
    if ro.state is S.PENDING:
        _enter_wave(conn, repo, ro, 0, now)
    elif ro.state in (S.WAVE, S.SOAKING):
        checks = ro.checks(conn, wave)
        names = _names(conn, checks)
        failed = {names[n]: c.detail for n, c in checks.items() if c.verdict is Verdict.FAILED}
        if failed:
            _halt(conn, repo, ro, wave, f"guard breach in wave {wave}: {failed}", now)
        elif ro.state is S.WAVE and all(c.verdict is Verdict.HEALTHY for c in checks.values()):
            soak = ro.spec.plan.soak_s
            _move(conn, ro.row, S.SOAKING, f"wave {wave} converged; soaking {soak} s",
                  phase_started_at=now)  # fmt: skip
        elif ro.state is S.WAVE and age > ro.spec.plan.wave_timeout_s:
            waiting = {
                names[n]: c.detail for n, c in checks.items() if c.verdict is Verdict.WAITING
            }
            _halt(conn, repo, ro, wave, f"wave {wave} did not converge in "
                  f"{ro.spec.plan.wave_timeout_s} s: {waiting}", now)  # fmt: skip
        elif ro.state is S.SOAKING and age >= ro.spec.plan.soak_s:
            if wave + 1 < len(ro.waves):
                _enter_wave(conn, repo, ro, wave + 1, now)
            else:
                _move(conn, ro.row, S.COMPLETED, f"all {len(ro.nodes)} node(s) healthy")
    elif ro.state is S.HALTED:
        behind = [
            n for n in ro.waves[wave] if not _acted(conn, n, ro.nodes[n]["reverted_revision"])
        ]
        if not behind:
            _move(conn, ro.row, S.ROLLED_BACK, f"wave {wave} acted on its previous documents")
    return State(lock(conn, rollout_id).state)


def _acted(conn: sa.Connection, node_id: str, revision: int | None) -> bool:
    """Whether the node reported acting on ``revision`` (or a later one)."""
    if revision is None:
        return True
    acted = (_report(conn, node_id) or {}).get("revision")
    return isinstance(acted, int) and acted >= revision


def _enter_wave(conn: sa.Connection, repo: Any, ro: _Rollout, wave: int, now: float) -> None:
    plan = ro.spec.plan
    desired = {}
    for node_id in ro.waves[wave]:
        ro.nodes[node_id]["previous"] = _previous_doc(conn, node_id)
        entry = ro.entries[ro.nodes[node_id]["ref"]]
        desired[node_id] = dep.Desired(
            [entry], ro.spec.serving, plan.watch_s, plan.guard, ro.id, wave
        )
    revisions = dep.set_desired(conn, repo, desired)
    for node_id, revision in revisions.items():
        ro.nodes[node_id]["revision"] = revision
    ro.save_nodes(conn)
    named = list(_names(conn, ro.waves[wave]).values())
    _move(conn, ro.row, S.WAVE, f"wave {wave}: {named} given {ro.spec.model}",
          wave=wave, phase_started_at=now)  # fmt: skip


def _halt(conn: sa.Connection, repo: Any, ro: _Rollout, wave: int, why: str, now: float) -> None:
    nodes = [n for n in ro.waves[wave] if ro.nodes[n]["revision"] is not None]
    revisions = dep.set_desired(conn, repo, {n: _restore(ro.nodes[n]["previous"]) for n in nodes})
    for node_id, revision in revisions.items():
        ro.nodes[node_id]["reverted_revision"] = revision
    ro.save_nodes(conn)
    named = list(_names(conn, nodes).values())
    _move(conn, ro.row, S.HALTED, f"{why}; reverted {named}", phase_started_at=now)


def rollback(
    conn: sa.Connection, repo: Any, rollout_id: str, to: dict[str, Any] | None, label: str
) -> None:
    """Give every node the rollout reached its previous document, or ``to`` (an entry)."""
    ro = _Rollout(lock(conn, rollout_id))
    reached = [n for n, info in ro.nodes.items() if info["revision"] is not None]
    _refuse_busy(conn, set(reached), but=rollout_id)
    plan = ro.spec.plan
    desired = {
        n: _restore(ro.nodes[n]["previous"])
        if to is None
        else dep.Desired([to], ro.spec.serving, plan.watch_s, plan.guard, ro.id, None)
        for n in reached
    }
    revisions = dep.set_desired(conn, repo, desired)
    for node_id, revision in revisions.items():
        ro.nodes[node_id]["reverted_revision"] = revision
    ro.save_nodes(conn)
    _move(conn, ro.row, S.ROLLED_BACK, f"manual rollback of {reached} to {label}")


def pause(conn: sa.Connection, rollout_id: str) -> None:
    row = lock(conn, rollout_id)
    _move(conn, row, S.PAUSED, f"paused in {row.state}", resume_state=row.state)


def resume(conn: sa.Connection, rollout_id: str) -> None:
    row = lock(conn, rollout_id)
    if row.state != S.PAUSED.value:
        raise ConflictError(f"rollout {rollout_id} is {row.state}, not PAUSED")
    back = State(row.resume_state or S.PENDING.value)
    # The soak (or convergence) clock restarts: time spent paused is not health evidence.
    _move(conn, row, back, "resumed", resume_state=None, phase_started_at=time.time())


def to_dict(conn: sa.Connection, rollout_id: str) -> dict[str, Any]:
    """A rollout as the API shows it: state, waves, per-node status and events."""
    query = sa.select(tables.rollouts).where(tables.rollouts.c.rollout_id == rollout_id)
    row = conn.execute(query).first()
    if row is None:
        raise NotFoundError(f"rollout {rollout_id!r} does not exist", hint="GET /api/v1/rollouts")
    ro = _Rollout(row)
    nodes = {}
    names = _names(conn, ro.nodes)
    for node_id, info in ro.nodes.items():
        report = _report(conn, node_id)
        check = None
        if info["revision"] is not None:
            sha = ro.entries[info["ref"]]["sha256"]
            check = check_node(report, int(info["revision"]), sha, ro.spec.plan.guard)
        nodes[node_id] = {
            "name": names[node_id],  # as ``fleet nodes`` names it
            "wave": info["wave"],
            "ref": info["ref"],
            "revision": info["revision"],
            "reverted_revision": info["reverted_revision"],
            "reported_revision": None if report is None else report.get("revision"),
            "active": None if report is None else report.get("active"),
            "status": "not reached" if check is None else check.verdict.value,
            "detail": None if check is None else check.detail,
        }
    events = conn.execute(
        sa.select(tables.rollout_events)
        .where(tables.rollout_events.c.rollout_id == rollout_id)
        .order_by(tables.rollout_events.c.event_id)
    )
    return {
        "rollout_id": ro.id,
        "name": ro.spec.name,
        "model": str(ro.spec.model),
        "state": ro.state.value,
        "wave": int(row.wave),
        "waves": ro.waves,
        "spec": ro.spec.to_dict(),
        "nodes": nodes,
        "events": [{"at": fleet.iso(e.at), "state": e.state, "detail": e.detail} for e in events],
        "created_at": fleet.iso(row.created_at),
        "updated_at": fleet.iso(row.updated_at),
    }


def ids(conn: sa.Connection, states: frozenset[State] | None = None) -> list[str]:
    query = sa.select(tables.rollouts.c.rollout_id).order_by(tables.rollouts.c.created_at)
    if states is not None:
        query = query.where(tables.rollouts.c.state.in_([s.value for s in states]))
    return [str(r) for r in conn.execute(query).scalars()]
