"""What federated clients and the admin read and write, over one database connection.

The client's side of a round, as its worker sees it (:mod:`edgeloop.agent.fl_worker`):

1. ``assignment(node)``: the round it is selected for (train, or evaluate the final model),
   with the model's URL and sha256, or None;
2. ``model(task, round)``: the round's global model, float32 little-endian (the worker checks
   the sha256 the assignment named), recorded as a download with its size;
3. ``put_update``: its weights (float32, the same layout) and metrics, or only metrics for an
   evaluation, or a decline with the node's reason (``{"decline": REASON}``, no body: its
   power policy refuses to train now). A node may answer only a round it was selected for,
   once, while it is open.

Status documents (:func:`to_dict`) are what ``GET /api/v1/fl/tasks/{id}`` and
``edgeloop fl status`` show.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import sqlalchemy as sa

from edgeloop.control import fl_rounds, fl_secagg
from edgeloop.control import fl_store as st
from edgeloop.control.fl_candidates import record_power
from edgeloop.control.fl_store import TaskSpec, TaskState
from edgeloop.core.errors import ConflictError, DataError, NotFoundError
from edgeloop.federated.models import fl_model
from edgeloop.federated.round import RoundState
from edgeloop.federated.selection import PowerSource

REGISTER_LEASE_S = 600.0  # a registration claimed longer ago than this is taken up again


def assignment(
    conn: sa.Connection, node_id: str, now: float | None = None
) -> dict[str, Any] | None:
    """The round ``node_id`` should work on now (the oldest running task first), or None;
    ``deadline_in_s``: the seconds left before its deadline (clocks of nodes may differ)."""
    now = time.time() if now is None else now
    t = st.tasks
    q = sa.select(t).where(t.c.state == TaskState.RUNNING.value).order_by(t.c.created_at)
    for row in conn.execute(q):
        phase = RoundState(row.phase)
        if phase not in (RoundState.TRAINING, RoundState.MASKING, RoundState.EVALUATING):
            continue
        if node_id not in json.loads(row.selected):
            continue
        secagg = None
        if row.secagg is not None and phase is not RoundState.EVALUATING:
            secagg = fl_secagg.assignment(conn, row, node_id)
            if secagg is None:
                continue
        elif node_id in fl_rounds.answered_by(conn, row.task_id, row.round):
            continue
        spec = TaskSpec.from_dict(json.loads(row.spec))
        sha = conn.execute(
            sa.select(st.models.c.sha256).where(
                st.models.c.task_id == row.task_id, st.models.c.round == row.round
            )
        ).scalar_one()
        return {
            "task_id": row.task_id,
            "round": row.round,
            "kind": "evaluate" if phase is RoundState.EVALUATING else "train",
            "secagg": secagg,
            "model": spec.model,
            "model_sha256": sha,
            "model_path": f"/api/v1/fl/tasks/{row.task_id}/rounds/{row.round}/model",
            "local": spec.to_dict()["local"],
            "deadline_at": row.phase_started_at + spec.deadline_s,
            "deadline_in_s": max(row.phase_started_at + spec.deadline_s - now, 0.0),
        }
    return None


def model(conn: sa.Connection, task_id: str, round: int) -> tuple[bytes, str]:
    """The global model clients train from in ``round`` and its sha256.

    Raises:
        NotFoundError: no such task or round.
    """
    m = st.models
    row = conn.execute(
        sa.select(m.c.weights, m.c.sha256).where(m.c.task_id == task_id, m.c.round == round)
    ).first()
    if row is None:
        raise NotFoundError(f"federated task {task_id!r} has no model for round {round}")
    return bytes(row.weights), str(row.sha256)


def record_download(
    conn: sa.Connection, task_id: str, round: int, node_id: str, size: int, now: float
) -> None:
    m = st.messages
    key = (m.c.task_id == task_id, m.c.round == round, m.c.node_id == node_id,
           m.c.kind == "download")  # fmt: skip
    if conn.execute(sa.select(m.c.bytes).where(*key)).first() is not None:
        conn.execute(m.update().where(*key).values(bytes=m.c.bytes + size, received_at=now))
        return
    conn.execute(m.insert().values(task_id=task_id, round=round, node_id=node_id,
                                   kind="download", received_at=now, num_samples=0, bytes=size,
                                   payload=None, metrics="{}"))  # fmt: skip


def put_update(
    conn: sa.Connection,
    task_id: str,
    round: int,
    node_id: str,
    header: Mapping[str, Any],
    body: bytes,
    now: float,
) -> None:
    """Store a client's answer to ``round`` (screened for shape and NaN when the round closes).

    Raises:
        NotFoundError: no such task. ConflictError: the round is not open, the node was not
        asked, or it answered already. DataError: a body that is not float32 values, or
        metrics that are not numbers.
    """
    row = fl_rounds.task_row(conn, task_id, lock=True)
    phase = RoundState(row.phase)
    if row.state != TaskState.RUNNING.value or round != row.round or phase not in (
        RoundState.TRAINING, RoundState.MASKING, RoundState.EVALUATING
    ):  # fmt: skip
        raise ConflictError(
            f"round {round} of task {task_id} is not open (task {row.state}, round {row.round} "
            f"{row.phase}); the update was not taken",
            hint="an update answers the round its assignment named, before the deadline",
        )
    if node_id not in json.loads(row.selected):
        raise ConflictError(f"node {node_id} was not selected for round {round} of {task_id}")
    spec = TaskSpec.from_dict(json.loads(row.spec))
    c = st.clients  # a node at work is alive: it stays a candidate for the next round
    conn.execute(c.update().where(c.c.node_id == node_id).values(last_poll=now))
    if row.secagg is not None and phase is not RoundState.EVALUATING:
        fl_secagg.put(conn, row, node_id, header, body, fl_model(spec.model).num_params, now)
        return
    if node_id in fl_rounds.answered_by(conn, task_id, round):
        raise ConflictError(f"node {node_id} already answered round {round} of {task_id}")
    if "decline" in header:
        _decline(conn, (task_id, round, node_id), header["decline"], body, now)
        return
    evaluate = phase is RoundState.EVALUATING
    if len(body) % 4 or (evaluate and body):
        raise DataError(
            f"an update body holds float32 weights (a multiple of 4 bytes), got {len(body)} "
            "bytes" + (" (an evaluation carries none)" if evaluate else "")
        )
    samples, metrics = _header(header)
    if not evaluate and len(body) > 4 * fl_model(spec.model).num_params * 2:
        raise DataError(f"update of {len(body)} bytes for a {spec.model} of "
                        f"{fl_model(spec.model).num_params} parameters")  # fmt: skip
    conn.execute(st.messages.insert().values(
        task_id=task_id, round=round, node_id=node_id, kind="update", received_at=now,
        num_samples=samples, bytes=len(body), payload=None if evaluate else body,
        metrics=json.dumps(metrics),
    ))  # fmt: skip


def _decline(
    conn: sa.Connection, key: tuple[str, int, str], reason: Any, body: bytes, now: float
) -> None:
    """Record a node's decline of a round (its reason, a non-empty text, and no body)."""
    if not isinstance(reason, str) or not 0 < len(reason) <= 500 or body:
        raise DataError(
            f"a decline carries its reason (text of 1-500 characters) and no body; got "
            f"{str(reason)[:80]!r} and {len(body)} bytes"
        )
    task_id, round, node_id = key
    conn.execute(st.messages.insert().values(
        task_id=task_id, round=round, node_id=node_id, kind="decline", received_at=now,
        num_samples=0, bytes=0, payload=None, metrics=json.dumps({"reason": reason}),
    ))  # fmt: skip


def _header(header: Mapping[str, Any]) -> tuple[int, dict[str, float]]:
    try:
        samples = int(header.get("num_samples", 0))
        raw = header.get("metrics") or {}
        metrics = {str(k): float(v) for k, v in dict(raw).items()}
    except (TypeError, ValueError) as exc:
        raise DataError(f"update header: num_samples an integer, metrics numbers ({exc})") from exc
    if not all(np.isfinite(list(metrics.values()))):
        raise DataError("update metrics must be finite numbers")
    return samples, metrics


def to_dict(conn: sa.Connection, task_id: str) -> dict[str, Any]:
    row = fl_rounds.task_row(conn, task_id)
    history = json.loads(row.history)
    result = json.loads(row.result)
    done = [h for h in history if h.get("closed_at") is not None]
    epsilons = [h["epsilon"] for h in done if h.get("epsilon") is not None]
    return {
        "task_id": row.task_id,
        "state": row.state,
        "round": row.round,
        "phase": row.phase,
        "selected": json.loads(row.selected),
        "secagg": None if row.secagg is None else json.loads(row.secagg),
        "spec": json.loads(row.spec),
        "rounds_done": len([h for h in done if h["participants"]]),
        "epsilon": epsilons[-1] if epsilons else None,
        "initial_evaluation": result.get("initial"),
        "history": history,
        "reason": result.get("reason"),
        "registration": result.get("registration"),
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


def summary(conn: sa.Connection, task_id: str) -> dict[str, Any]:
    """The list view of a task."""
    full = to_dict(conn, task_id)
    last = next((h for h in reversed(full["history"]) if h.get("accuracy") is not None), None)
    return {k: full[k] for k in ("task_id", "state", "round", "phase", "rounds_done", "epsilon",
                                 "reason", "created_at")} | {
        "model": full["spec"]["model"], "strategy": full["spec"]["strategy"],
        "rounds": full["spec"]["rounds"],
        "accuracy": None if last is None else last["accuracy"],
    }  # fmt: skip


def set_registration(conn: sa.Connection, task_id: str, value: dict[str, Any]) -> None:
    row = fl_rounds.task_row(conn, task_id, lock=True)
    result = json.loads(row.result)
    result["registration"] = value
    conn.execute(st.tasks.update().where(st.tasks.c.task_id == task_id).values(
        result=json.dumps(result)))  # fmt: skip


def _due(registration: dict[str, Any] | None, now: float) -> bool:
    """Pending, or claimed by a process that did not finish within REGISTER_LEASE_S (a
    control plane killed while it registered: the restarted one takes it up again)."""
    state = (registration or {}).get("state")
    if state == "pending":
        return True
    since = (registration or {}).get("since")
    return state == "running" and isinstance(since, int | float) and since < now - REGISTER_LEASE_S


def claim_registration(
    conn: sa.Connection, task_id: str, now: float | None = None
) -> dict[str, Any] | None:
    """The task's status if its registration is due (now marked running), else None: one
    caller among concurrent ones exports and registers the model."""
    now = time.time() if now is None else now
    row = fl_rounds.task_row(conn, task_id, lock=True)
    result = json.loads(row.result)
    if not _due(result.get("registration"), now):
        return None
    result["registration"] = {"state": "running", "since": now}
    conn.execute(st.tasks.update().where(st.tasks.c.task_id == task_id).values(
        result=json.dumps(result)))  # fmt: skip
    return to_dict(conn, task_id) | {"weights": bytes(row.weights)}


def pending_registrations(conn: sa.Connection, now: float | None = None) -> list[str]:
    """Ended tasks whose registration is due (pending, or its claim's lease ran out)."""
    now = time.time() if now is None else now
    t = st.tasks
    q = sa.select(t.c.task_id, t.c.result).where(t.c.state != TaskState.RUNNING.value)
    return [str(task_id) for task_id, result in conn.execute(q)
            if _due(json.loads(result).get("registration"), now)]  # fmt: skip


def heard(
    conn: sa.Connection,
    node_id: str,
    train: int,
    test: int,
    now: float,
    power: tuple[PowerSource, float | None] | None = None,
) -> None:
    """Record a worker's poll (it is a candidate for ELIGIBLE_S seconds) and the power state
    it sent (kept as sent: ``power`` None leaves the last one)."""
    t = st.clients
    values = {"last_poll": now, "train_samples": train, "test_samples": test}
    if conn.execute(t.update().where(t.c.node_id == node_id).values(values)).rowcount == 0:
        conn.execute(t.insert().values(node_id=node_id, **values))
    if power is not None:
        record_power(conn, node_id, power[0], power[1], now)


def stop(conn: sa.Connection, task_id: str, now: float) -> None:
    """Stop a running task; the model of its last finished round stays (and is registered).

    Raises:
        ConflictError: the task already ended.
    """
    row = fl_rounds.task_row(conn, task_id, lock=True)
    if row.state != TaskState.RUNNING.value:
        raise ConflictError(
            f"federated task {task_id} already ended ({row.state})", hint="nothing to stop"
        )
    fl_rounds.end_task(conn, row, TaskState.STOPPED, now, "stopped by the admin")
    result = json.loads(fl_rounds.task_row(conn, task_id).result)
    done = json.loads(row.history)
    if any(h.get("closed_at") and h.get("participants") for h in done):
        result["registration"] = {"state": "pending"}
        fl_rounds.save_task(conn, task_id, now, result=json.dumps(result))
