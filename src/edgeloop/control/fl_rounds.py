"""Federated rounds run by the control plane over its database (numpy only, no torch).

A task moves round by round through :class:`~edgeloop.federated.round.RoundState`:

    SELECTING -> TRAINING -> AGGREGATING (in one transaction) -> SELECTING of the next round
    ... after the last round: EVALUATING (clients score the final model) -> the task is DONE

:func:`advance` is the only function that moves a task; it runs in one write transaction with
the task's row locked, so any request (a poll, an upload, a status read) may call it and
concurrent callers, or replicas, never apply a round twice. Every step is decided from the
stored rows and the clock, so a restarted control plane resumes where the rows say.

A round closes when every selected client answered or its deadline passed; the selected
clients that did not answer are its dropouts, and the round is aggregated with the accepted
updates if there are at least ``min_clients`` of them (``close_round``: screened, never
half-applied). With fewer, the task FAILS with the reason and the global model of the last
good round stays. Accuracy: each client scores the model it receives on its own held-out
share before training, so round r's accuracy (of the model after round r) arrives with round
r+1's answers, and the last one from the EVALUATING step.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np
import sqlalchemy as sa

from edgeloop.control import fl_phases, fl_secagg
from edgeloop.control import fl_store as st
from edgeloop.control.fl_candidates import ELIGIBLE_S, candidates
from edgeloop.control.fl_store import TaskSpec, TaskState
from edgeloop.core.errors import EdgeError, NotFoundError
from edgeloop.federated.accountant import PrivacyAccountant, check_next_round
from edgeloop.federated.convergence import record_round
from edgeloop.federated.dp import DpConfig, DpFedAvg
from edgeloop.federated.models import fl_model
from edgeloop.federated.round import Participation, RoundState, close_round, transition
from edgeloop.federated.selection import Selection
from edgeloop.federated.strategy import STRATEGIES, Aggregate, ServerState, Strategy
from edgeloop.federated.update import ClientUpdate, UpdateLimits, Vector

S = RoundState


def create(conn: sa.Connection, spec: TaskSpec, initial: Vector, now: float) -> str:
    """A new task in round 1, selecting; ``initial`` is the seeded initial model (float64)."""
    task_id = uuid.uuid4().hex[:12]
    conn.execute(
        st.tasks.insert().values(
            task_id=task_id, spec=json.dumps(spec.to_dict()), state=TaskState.RUNNING.value,
            round=1, phase=S.SELECTING.value, phase_started_at=now, selected="[]",
            weights=np.asarray(initial, dtype="<f8").tobytes(),
            server_state=st.pack_state(ServerState()), history="[]",
            result=json.dumps({"reason": None, "registration": None, "initial": None}),
            created_at=now, updated_at=now,
        )
    )  # fmt: skip
    return task_id


def running(conn: sa.Connection) -> list[str]:
    t = st.tasks
    q = sa.select(t.c.task_id).where(t.c.state == TaskState.RUNNING.value)
    return [str(r[0]) for r in conn.execute(q.order_by(t.c.created_at))]


def ids(conn: sa.Connection) -> list[str]:
    t = st.tasks
    return [str(r[0]) for r in conn.execute(sa.select(t.c.task_id).order_by(t.c.created_at))]


def task_row(conn: sa.Connection, task_id: str, lock: bool = False) -> Any:
    q = sa.select(st.tasks).where(st.tasks.c.task_id == task_id)
    row = conn.execute(q.with_for_update() if lock else q).first()
    if row is None:
        raise NotFoundError(f"no federated task {task_id!r}", hint="list them: edgeloop fl list")
    return row


def save_task(conn: sa.Connection, task_id: str, now: float, **values: Any) -> None:
    t = st.tasks
    conn.execute(t.update().where(t.c.task_id == task_id).values(updated_at=now, **values))


def advance(conn: sa.Connection, task_id: str, now: float) -> bool:
    """Move the task as far as its rows and the clock allow (several steps at once); whether
    it moved (what a node is asked to do may have changed)."""
    moved = False
    for _ in range(4):
        if not _step(conn, task_id, now):
            break
        moved = True
    return moved


def signature(conn: sa.Connection) -> tuple[tuple[str, int, str, float], ...]:
    """What the running tasks' rows say of their step: a task that moved changes it (every move
    stores the row with its ``updated_at``), also when another replica moved it."""
    t = st.tasks
    q = sa.select(t.c.task_id, t.c.round, t.c.phase, t.c.updated_at)
    rows = conn.execute(q.where(t.c.state == TaskState.RUNNING.value).order_by(t.c.task_id))
    return tuple((str(r[0]), int(r[1]), str(r[2]), float(r[3])) for r in rows)


def _step(conn: sa.Connection, task_id: str, now: float) -> bool:
    row = task_row(conn, task_id, lock=True)
    if row.state != TaskState.RUNNING.value:
        return False
    spec = TaskSpec.from_dict(json.loads(row.spec))
    phase = S(row.phase)
    if phase is S.SELECTING:
        return _select(conn, row, spec, now)
    selected: list[str] = json.loads(row.selected)
    late = now - row.phase_started_at >= spec.deadline_s
    if spec.secagg and phase is not S.EVALUATING:
        return _secagg_step(conn, row, spec, late, now)
    answered = answered_by(conn, task_id, row.round)
    if not (set(selected) <= answered or late):
        return False
    if phase is S.TRAINING:
        _close(conn, row, spec, selected, now)
    else:
        _finish_evaluation(conn, row, selected, now)
    return True


def answered_by(conn: sa.Connection, task_id: str, round: int) -> set[str]:
    """The nodes that answered ``round``: with an update, or by declining it."""
    m = st.messages
    q = sa.select(m.c.node_id).where(
        m.c.task_id == task_id, m.c.round == round, m.c.kind.in_(("update", "decline"))
    )
    return {str(r[0]) for r in conn.execute(q)}


def _eligible(conn: sa.Connection, now: float) -> list[Any]:
    c = st.clients
    q = sa.select(c).where(c.c.last_poll >= now - ELIGIBLE_S, c.c.train_samples > 0)
    return list(conn.execute(q.order_by(c.c.node_id)))


def _select(conn: sa.Connection, row: Any, spec: TaskSpec, now: float) -> bool:
    history: list[dict[str, Any]] = json.loads(row.history)
    eligible = _eligible(conn, now)
    everyone = candidates(conn, now, history)
    selection = None
    if len(eligible) >= spec.min_clients:
        k = min(spec.clients_per_round, len(eligible))
        selection = spec.make_selector().select(everyone, k, row.round)
    if selection is None or len(selection.chosen) < spec.min_clients:
        if now - row.phase_started_at < spec.deadline_s:
            return False
        return end_task(conn, row, TaskState.FAILED, now, _too_few(row.round, spec, selection,
                                                                   len(eligible)))  # fmt: skip
    epsilon = None
    if spec.dp is not None:
        q_clients = min(spec.clients_per_round, len(eligible))
        accountant = PrivacyAccountant.for_fleet(
            spec.dp.noise_multiplier, q_clients, len(eligible), spec.dp.delta
        )
        if spec.dp.target_epsilon is not None:
            check = check_next_round(accountant, row.round - 1, spec.dp.target_epsilon)
            if not check.allowed:
                return end_task(conn, row, TaskState.DONE, now, (
                    f"round {row.round} refused: epsilon would reach {check.epsilon_after:.3f} > "
                    f"target {check.target_epsilon} (now {check.epsilon_now:.3f})"
                ))  # fmt: skip
        epsilon = accountant.epsilon(row.round)
    weights = st.as_float32_bytes(st.as_float64(row.weights))
    _put_model(conn, row.task_id, row.round, weights)
    history.append({
        "round": row.round, "selected": list(selection.chosen), "eligible": len(eligible),
        "why": {d.node_id: d.why.value for d in selection.decisions},
        "why_detail": {d.node_id: d.detail for d in selection.decisions},
        "started_at": now, "closed_at": None, "participants": [], "dropouts": [],
        "declined": {}, "rejected": {}, "client_cpu_s": {}, "client_samples": {},
        "epsilon": epsilon, "accuracy": None, "loss": None,
        "eval_samples": 0, "client_loss": None, "update_norm": None, "divergence": None,
        "num_samples": 0, "bytes_up": 0, "bytes_down": 0,
    })  # fmt: skip
    secagg = fl_secagg.start(selection.chosen, spec.min_clients) if spec.secagg else None
    save_task(conn, row.task_id, now, phase=transition(S.SELECTING, S.TRAINING).value,
          phase_started_at=now, selected=json.dumps(list(selection.chosen)),
          history=json.dumps(history), secagg=secagg and json.dumps(secagg))  # fmt: skip
    return True


def _too_few(round: int, spec: TaskSpec, selection: Selection | None, eligible: int) -> str:
    if selection is None:
        return (
            f"round {round}: {eligible} eligible clients (federated workers that polled in the "
            f"last {ELIGIBLE_S:.0f} s with training data), the task needs {spec.min_clients}; "
            f"start agents with a data partition (edgeloop fleet up --fl-data digits) or lower "
            f"--min-clients"
        )
    why = "; ".join(f"{d.node_id}: {d.why.value} {d.detail}".strip() for d in selection.decisions)
    return (
        f"round {round}: selector {spec.selector!r} chose {len(selection.chosen)} clients, the "
        f"task needs {spec.min_clients} ({why})"
    )


def _put_model(conn: sa.Connection, task_id: str, round: int, data: bytes) -> None:
    sha = hashlib.sha256(data).hexdigest()
    conn.execute(st.models.insert().values(task_id=task_id, round=round, sha256=sha, weights=data))


def _messages(conn: sa.Connection, task_id: str, round: int) -> list[Any]:
    m = st.messages
    q = sa.select(m).where(m.c.task_id == task_id, m.c.round == round)
    return list(conn.execute(q.order_by(m.c.received_at)))


def _strategy(spec: TaskSpec) -> Strategy:
    if spec.dp is not None:
        config = DpConfig(spec.dp.noise_multiplier, spec.dp.clip_norm)
        return DpFedAvg(config, seed=None)  # OS entropy: a known seed would reveal the noise
    return STRATEGIES.create(spec.strategy, **spec.strategy_params)


def _evaluation(rows: Sequence[Any]) -> dict[str, Any]:
    """Test-sample-weighted accuracy and loss the clients measured on the model they got."""
    scored = [(json.loads(r.metrics), r) for r in rows if r.kind in ("update", "mask")]
    scored = [(m, r) for m, r in scored if m.get("eval_samples", 0) > 0]
    n = sum(int(m["eval_samples"]) for m, _ in scored)
    if n == 0:
        return {"accuracy": None, "loss": None, "eval_samples": 0}
    acc = sum(m["eval_accuracy"] * m["eval_samples"] for m, _ in scored) / n
    loss = sum(m["eval_loss"] * m["eval_samples"] for m, _ in scored) / n
    return {"accuracy": acc, "loss": loss, "eval_samples": n}


def _close(conn: sa.Connection, row: Any, spec: TaskSpec, selected: list[str], now: float) -> None:
    """Screen and aggregate round ``row.round`` (or fail the task); open the next step."""
    model = fl_model(spec.model)
    rows = _messages(conn, row.task_id, row.round)
    history: list[dict[str, Any]] = json.loads(row.history)
    record = history[-1]
    result = json.loads(row.result)
    scored = _evaluation(rows)
    if row.round == 1:
        result["initial"] = scored
    else:
        history[-2].update(scored)
    updates = [
        ClientUpdate(
            r.node_id,
            row.round,
            r.num_samples,
            st.as_float64_from32(r.payload),
            json.loads(r.metrics),
        )
        for r in rows
        if r.kind == "update" and r.payload is not None
    ]
    declined = {r.node_id: json.loads(r.metrics).get("reason", "") for r in rows
                if r.kind == "decline"}  # fmt: skip
    asked = [n for n in selected if n not in declined]  # a decline is an answer, no dropout
    old = st.as_float64(row.weights)
    limits = UpdateLimits(row.round, model.num_params, model.num_params * 8, frozenset(selected))
    participation = Participation(min_clients=spec.min_clients, min_available=spec.min_clients)
    state = st.unpack_state(row.server_state)
    outcome = close_round(
        round=row.round, strategy=_strategy(spec), global_weights=old, state=state,
        selected=asked, updates=updates, limits=limits, participation=participation,
    )  # fmt: skip
    accepted = outcome.screening.accepted
    record.update(
        closed_at=now, dropouts=list(outcome.dropouts), declined=declined,
        client_cpu_s={u.node_id: u.metrics["cpu_s"] for u in accepted if "cpu_s" in u.metrics},
        client_samples={u.node_id: u.num_samples for u in accepted},
        participants=[u.node_id for u in outcome.screening.accepted],
        rejected={v.node_id: f"{v.reason.value if v.reason else ''}: {v.detail}"
                  for v in outcome.screening.rejected},
        bytes_up=sum(r.bytes for r in rows if r.kind == "update"),
        bytes_down=sum(r.bytes for r in rows if r.kind == "download"),
        phases_s=fl_phases.phases(rows, record["started_at"], now),
    )  # fmt: skip
    m = st.messages
    conn.execute(
        m.update().where(m.c.task_id == row.task_id, m.c.round == row.round).values(payload=None)
    )
    if outcome.aggregate is None:
        save_task(conn, row.task_id, now, history=json.dumps(history), result=json.dumps(result))
        also = f"; {len(declined)} declined ({', '.join(sorted(declined))})" if declined else ""
        end_task(conn, task_row(conn, row.task_id), TaskState.FAILED, now, f"round {row.round} "
             f"failed: {outcome.reason}{also}")  # fmt: skip
        return
    new = outcome.aggregate.weights
    figures = record_round(row.round, old, new, outcome.screening.accepted)
    record.update(
        client_loss=figures.client_loss, update_norm=figures.update_norm,
        divergence=figures.divergence, num_samples=outcome.aggregate.num_samples,
    )  # fmt: skip
    answered = [u.node_id for u in outcome.screening.accepted]
    _commit(conn, row, spec, (history, result), outcome.aggregate, answered, now)


def _commit(
    conn: sa.Connection,
    row: Any,
    spec: TaskSpec,
    documents: tuple[list[dict[str, Any]], dict[str, Any]],
    aggregate: Aggregate,
    answered: list[str],
    now: float,
) -> None:
    """Store the round's new global model and open the next round (or the final evaluation)."""
    history, result = documents
    new = aggregate.weights
    last = row.round >= spec.rounds
    phase, selected_next, round_next = S.SELECTING, "[]", row.round + 1
    if last:  # one more step: the clients score the final model
        transition(transition(S.TRAINING, S.AGGREGATING), S.EVALUATING)
        phase = S.EVALUATING
        # Those that just answered (alive) and hold test data score the final model.
        tested = {r.node_id for r in _eligible(conn, now) if r.test_samples > 0}
        selected_next = json.dumps([n for n in answered if n in tested])
        _put_model(conn, row.task_id, round_next, st.as_float32_bytes(new))
    save_task(conn, row.task_id, now, round=round_next, phase=phase.value, phase_started_at=now,
          selected=selected_next, weights=np.asarray(new, dtype="<f8").tobytes(),
          server_state=st.pack_state(aggregate.state), history=json.dumps(history),
          result=json.dumps(result), secagg=None)  # fmt: skip


def _secagg_step(conn: sa.Connection, row: Any, spec: TaskSpec, late: bool, now: float) -> bool:
    """One move of a SecAgg round (control/fl_secagg.py): the next step, the close, or a fail."""
    state = json.loads(row.secagg)
    new, failure, moved = fl_secagg.advance(conn, row, state, late)
    if failure is not None:
        return end_task(conn, row, TaskState.FAILED, now, f"round {row.round} failed: {failure}")
    if not moved:
        return False
    if state["step"] != "unmask":
        phase = S.MASKING if new["step"] == "unmask" else S.TRAINING
        save_task(
            conn,
            row.task_id,
            now,
            secagg=json.dumps(new),
            phase_started_at=now,
            phase=transition(S.TRAINING, phase).value if phase is S.MASKING else phase.value,
        )
        return True  # fmt: skip
    _close_secagg(conn, row, spec, state, now)
    return True


def _close_secagg(
    conn: sa.Connection, row: Any, spec: TaskSpec, state: dict[str, Any], now: float
) -> None:
    """Unmask the sum, take the FedAvg mean as one pseudo-update through the strategy."""
    history: list[dict[str, Any]] = json.loads(row.history)
    result = json.loads(row.result)
    rows = _messages(conn, row.task_id, row.round)
    metrics = fl_secagg.client_metrics(conn, row)
    scored = _evaluation(rows)
    if row.round == 1:
        result["initial"] = scored
    else:
        history[-2].update(scored)
    selected: list[str] = json.loads(row.selected)
    responded = set(fl_secagg.answered(conn, row.task_id, row.round, "unmask"))
    record = history[-1]
    record.update(
        closed_at=now, participants=list(state["u3"]),
        dropouts=[n for n in selected if n not in state["u3"]],
        dropped_after_masking=[n for n in state["u3"] if n not in responded],
        secagg_threshold=state["threshold"], client_loss=fl_secagg.mean_metric(metrics, "loss"),
        bytes_up=sum(r.bytes for r in rows if r.kind != "download"),
        bytes_down=sum(r.bytes for r in rows if r.kind == "download"),
        phases_s=fl_phases.phases(rows, record["started_at"], now),
    )  # fmt: skip
    try:
        mean, count = fl_secagg.unmask(conn, row, state)
    except EdgeError as exc:
        save_task(conn, row.task_id, now, history=json.dumps(history), result=json.dumps(result))
        end_task(conn, task_row(conn, row.task_id), TaskState.FAILED, now,
             f"round {row.round} failed: {exc.message}")  # fmt: skip
        return
    finally:  # masked inputs and shares are kept no longer than the round
        m = st.messages
        conn.execute(m.update().where(m.c.task_id == row.task_id, m.c.round == row.round)
                     .values(payload=None))  # fmt: skip
    old = st.as_float64(row.weights)
    pseudo = ClientUpdate("secure-sum", row.round, max(1, round(count)), mean)
    aggregate = _strategy(spec).aggregate(old, [pseudo], st.unpack_state(row.server_state))
    record.update(update_norm=float(np.linalg.norm(aggregate.weights - old)),
                  num_samples=round(count))  # fmt: skip
    _commit(conn, row, spec, (history, result), aggregate, list(state["u3"]), now)


def _finish_evaluation(conn: sa.Connection, row: Any, selected: list[str], now: float) -> None:
    history: list[dict[str, Any]] = json.loads(row.history)
    history[-1].update(_evaluation(_messages(conn, row.task_id, row.round)))
    answered = answered_by(conn, row.task_id, row.round)
    history[-1]["final_evaluation_missing"] = sorted(set(selected) - answered)
    save_task(conn, row.task_id, now, history=json.dumps(history))
    end_task(conn, task_row(conn, row.task_id), TaskState.DONE, now, None)


def end_task(
    conn: sa.Connection, row: Any, state: TaskState, now: float, reason: str | None
) -> bool:
    result = json.loads(row.result)
    result["reason"] = reason
    if state is TaskState.DONE:
        result["registration"] = {"state": "pending"}
    save_task(conn, row.task_id, now, state=state.value, phase=(
        S.DONE if state is TaskState.DONE else S.FAILED).value, selected="[]",
        result=json.dumps(result))  # fmt: skip
    return True
