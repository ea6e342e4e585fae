"""Fleet A/B experiments as rows: their own table, an explicit state machine, the last look.

``STARTING -> RUNNING -> PROMOTING -> PROMOTED`` or ``... -> REVERTING -> REVERTED``; a start
whose rollout did not complete -> ``FAILED``; a promote whose rollout was halted ->
``RUNNING`` again (the nodes went back to the experiment's documents). The allowed moves are
:data:`TRANSITIONS`, checked in :func:`move`. A model has at most one experiment in an
:data:`OPEN` state; :func:`insert` checks it in the same write transaction.
"""

from __future__ import annotations

import json
import math
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import sqlalchemy as sa

from edgeloop.core.errors import ConflictError, NotFoundError
from edgeloop.experiments import ExperimentState, SequentialState
from edgeloop.registry import tuf_store
from edgeloop.registry.database import Database


class ExpState(StrEnum):
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    PROMOTING = "PROMOTING"
    PROMOTED = "PROMOTED"
    REVERTING = "REVERTING"
    REVERTED = "REVERTED"
    FAILED = "FAILED"


E = ExpState
TRANSITIONS: frozenset[tuple[ExpState, ExpState]] = frozenset(
    {
        (E.STARTING, E.RUNNING),
        (E.STARTING, E.FAILED),
        (E.RUNNING, E.PROMOTING),
        (E.PROMOTING, E.PROMOTED),
        (E.PROMOTING, E.RUNNING),  # the promote's rollout halted: its nodes went back
        (E.STARTING, E.REVERTING),
        (E.RUNNING, E.REVERTING),
        (E.FAILED, E.REVERTING),
        (E.REVERTING, E.REVERTED),
    }
)
OPEN = frozenset({E.STARTING, E.RUNNING, E.PROMOTING, E.REVERTING, E.FAILED})

metadata_obj = sa.MetaData()
experiments = sa.Table(
    "control_experiments",
    metadata_obj,
    sa.Column("experiment_id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("model", sa.String(128), nullable=False, index=True),
    sa.Column("champion", sa.Integer, nullable=False),
    sa.Column("challenger", sa.Integer, nullable=False),
    sa.Column("split", sa.Float, nullable=False),  # the challenger's share, in (0, 1]; 1: shadow
    sa.Column("config", sa.Text, nullable=False),  # JSON: metric, alpha, min_effect, plan, ...
    sa.Column("nodes", sa.Text, nullable=False),  # JSON: the node ids it runs on
    sa.Column("state", sa.String(16), nullable=False, index=True),
    sa.Column("rollout_id", sa.String(64), nullable=True),  # the rollout of the current step
    sa.Column("look", sa.Text, nullable=True),  # JSON: the last look's counts and verdict
    sa.Column("tests", sa.Text, nullable=True),  # JSON: the sequential tests' state
    sa.Column("history", sa.Text, nullable=False),  # JSON: [{at, state, detail}]
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)


@dataclass(frozen=True, slots=True)
class Experiment:
    """One row, decoded."""

    experiment_id: str
    name: str
    model: str
    champion: int
    challenger: int
    split: float
    config: Mapping[str, Any]
    nodes: tuple[str, ...]
    state: ExpState
    rollout_id: str | None
    look: Mapping[str, Any] | None
    tests: ExperimentState
    history: tuple[Mapping[str, Any], ...]
    created_at: float
    updated_at: float

    @classmethod
    def from_row(cls, row: sa.Row[Any]) -> Experiment:
        return cls(
            row.experiment_id, row.name, row.model, int(row.champion), int(row.challenger),
            float(row.split), json.loads(row.config), tuple(json.loads(row.nodes)),
            ExpState(row.state), row.rollout_id,
            json.loads(row.look) if row.look else None,
            tests_from_json(row.tests), tuple(json.loads(row.history)),
            float(row.created_at), float(row.updated_at),
        )  # fmt: skip


def create_table(db: Database) -> None:
    tuf_store.guarded(
        db, "creating the experiments table", lambda: metadata_obj.create_all(db.engine)
    )


def insert(conn: sa.Connection, name: str, model: str, champion: int, challenger: int,
           split: float, config: Mapping[str, Any], nodes: list[str]) -> str:  # fmt: skip
    """A new STARTING experiment's id.

    Raises:
        ConflictError: the model has an open experiment.
    """
    query = sa.select(experiments.c.experiment_id, experiments.c.state).where(
        experiments.c.model == model, experiments.c.state.in_([s.value for s in OPEN])
    )
    other = conn.execute(query.with_for_update()).first()
    if other is not None:
        raise ConflictError(
            f"model {model!r} is already in experiment {other.experiment_id} ({other.state}); "
            "one experiment per model at a time",
            hint=f"promote or revert it first: edgeloop fleet experiment revert "
            f"{other.experiment_id}",
        )
    exp_id = f"exp-{secrets.token_hex(5)}"
    now = time.time()
    history = [{"at": now, "state": E.STARTING.value, "detail": f"created on {len(nodes)} node(s)"}]
    conn.execute(
        experiments.insert().values(
            experiment_id=exp_id, name=name, model=model, champion=champion,
            challenger=challenger, split=split, config=json.dumps(dict(config)),
            nodes=json.dumps(nodes), state=E.STARTING.value, rollout_id=None, look=None,
            tests=None, history=json.dumps(history), created_at=now, updated_at=now,
        )
    )  # fmt: skip
    return exp_id


def get(conn: sa.Connection, exp_id: str, *, lock: bool = False) -> Experiment:
    """Raises NotFoundError naming the id and how to list them."""
    query = sa.select(experiments).where(experiments.c.experiment_id == exp_id)
    row = conn.execute(query.with_for_update() if lock else query).first()
    if row is None:
        raise NotFoundError(
            f"experiment {exp_id[:64]!r} does not exist", hint="edgeloop fleet experiment list"
        )
    return Experiment.from_row(row)


def listing(conn: sa.Connection) -> list[Experiment]:
    query = sa.select(experiments).order_by(experiments.c.created_at)
    return [Experiment.from_row(r) for r in conn.execute(query)]


def check_move(exp: Experiment, new: ExpState) -> None:
    """Raises ConflictError when ``exp`` may not go to ``new`` (not in :data:`TRANSITIONS`)."""
    if (exp.state, new) not in TRANSITIONS:
        allowed = sorted(n.value for o, n in TRANSITIONS if o is exp.state)
        raise ConflictError(
            f"experiment {exp.experiment_id} is {exp.state}; it cannot go to {new}",
            hint=f"from {exp.state} it can go to {', '.join(allowed) or 'nothing (it is over)'}",
        )


def move(conn: sa.Connection, exp: Experiment, new: ExpState, detail: str, **values: Any) -> None:
    """Move ``exp`` to ``new`` (a pair of :data:`TRANSITIONS`), with a history entry.

    Raises:
        ConflictError: the move is not allowed from the experiment's state.
    """
    check_move(exp, new)
    now = time.time()
    history = [*exp.history, {"at": now, "state": new.value, "detail": detail}]
    conn.execute(
        experiments.update()
        .where(experiments.c.experiment_id == exp.experiment_id)
        .values(state=new.value, updated_at=now, history=json.dumps(history), **values)
    )


def note(conn: sa.Connection, exp_id: str, detail: str) -> None:
    """A history entry without a change of state (e.g. a decision reached)."""
    exp = get(conn, exp_id)
    history = [*exp.history, {"at": time.time(), "state": exp.state.value, "detail": detail}]
    conn.execute(
        experiments.update()
        .where(experiments.c.experiment_id == exp_id)
        .values(history=json.dumps(history))
    )


def save_look(
    conn: sa.Connection, exp_id: str, look: Mapping[str, Any], tests: ExperimentState
) -> None:
    conn.execute(
        experiments.update()
        .where(experiments.c.experiment_id == exp_id)
        .values(look=json.dumps(look), tests=tests_to_json(tests), updated_at=time.time())
    )


def _num(x: float) -> float | None:
    return x if math.isfinite(x) else None


def tests_to_json(state: ExperimentState) -> str:
    return json.dumps({k: {"looks": s.looks, "p_value": s.p_value, "low": _num(s.low),
                           "high": _num(s.high)} for k, s in state.tests.items()})  # fmt: skip


def tests_from_json(text: str | None) -> ExperimentState:
    if not text:
        return ExperimentState()
    doc = json.loads(text)
    return ExperimentState({
        k: SequentialState(int(v["looks"]), float(v["p_value"]),
                           -math.inf if v["low"] is None else float(v["low"]),
                           math.inf if v["high"] is None else float(v["high"]))
        for k, v in doc.items()
    })  # fmt: skip
