"""Federated rounds over a real SQLite database, without agents: the state lives in the rows.

A round whose updates arrive on either side of a control-plane restart (a fresh engine on the
same file) closes with both; bad updates are screened with their reason and counted; the wire
refuses what a node may not send.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from edgeloop.control import fl_rounds, fl_store, fl_wire
from edgeloop.control.fl_store import TaskSpec
from edgeloop.core.errors import ConflictError, DataError
from edgeloop.federated.models import fl_model
from edgeloop.registry.database import Database, connect

PARAMS = fl_model("digits-mlp").num_params


def _open(path: Path) -> Database:
    db = connect(f"sqlite:///{path}")
    fl_store.create_tables(db)
    return db


def _update(db: Database, task: str, node: str, value: float, samples: int) -> None:
    body = np.full(PARAMS, value, dtype="<f4").tobytes()
    header = {"num_samples": samples, "metrics": {"loss": 1.0}}
    with db.write() as c:
        fl_wire.put_update(c, task, 1, node, header, body, time.time())
        fl_rounds.advance(c, task, time.time())


def _task(db: Database) -> sa.Row[tuple[object, ...]]:
    with db.engine.connect() as c:
        return c.execute(sa.select(fl_store.tasks)).one()


def test_a_round_closes_with_updates_sent_before_and_after_a_restart(tmp_path: Path) -> None:
    db = _open(tmp_path / "control.db")
    spec = TaskSpec(model="digits-mlp", rounds=2, clients_per_round=3, min_clients=2,
                    deadline_s=600)  # fmt: skip
    now = time.time()
    with db.write() as c:
        for node in ("n1", "n2", "n3"):
            fl_wire.heard(c, node, 100, 10, now)
        task = fl_rounds.create(c, spec, np.zeros(PARAMS), now)
        fl_rounds.advance(c, task, now)
    assert json.loads(_task(db).selected) and _task(db).phase == "training"
    _update(db, task, "n1", 1.0, 100)
    db.engine.dispose()  # the control plane stops; a new one opens the same file
    db = _open(tmp_path / "control.db")
    assert _task(db).round == 1  # nothing applied yet: n2, n3 are awaited
    _update(db, task, "n2", 3.0, 300)
    _update(db, task, "n3", float("nan"), 50)  # screened out, counted, never averaged
    row = _task(db)
    assert (row.round, row.phase) == (2, "training")
    weights = fl_store.as_float64(row.weights)
    assert np.allclose(weights, (1.0 * 100 + 3.0 * 300) / 400)  # FedAvg by samples
    first = json.loads(row.history)[0]
    assert sorted(first["participants"]) == ["n1", "n2"]
    assert first["rejected"] == {"n3": f"not_finite: {PARAMS} NaN/inf values"}
    assert first["num_samples"] == 400 and first["bytes_up"] == 3 * 4 * PARAMS
    with db.engine.connect() as c:  # raw updates are not kept past their round
        kept = c.execute(sa.select(fl_store.messages.c.payload)).scalars().all()
    assert kept and all(p is None for p in kept)
    db.engine.dispose()


def test_the_wire_refuses_what_a_node_may_not_send(tmp_path: Path) -> None:
    db = _open(tmp_path / "control.db")
    spec = TaskSpec(model="digits-mlp", rounds=1, clients_per_round=2, min_clients=2)
    now = time.time()
    with db.write() as c:
        fl_wire.heard(c, "n1", 100, 10, now)
        fl_wire.heard(c, "n2", 100, 10, now)
        task = fl_rounds.create(c, spec, np.zeros(PARAMS), now)
        fl_rounds.advance(c, task, now)
    good = np.zeros(PARAMS, dtype="<f4").tobytes()
    with db.write() as c, pytest.raises(ConflictError, match="not selected"):
        fl_wire.put_update(c, task, 1, "stranger", {"num_samples": 1}, good, now)
    with db.write() as c, pytest.raises(ConflictError, match="not open"):
        fl_wire.put_update(c, task, 2, "n1", {"num_samples": 1}, good, now)  # a future round
    with db.write() as c, pytest.raises(DataError, match="multiple of 4"):
        fl_wire.put_update(c, task, 1, "n1", {"num_samples": 1}, b"\0" * 5, now)
    with db.write() as c, pytest.raises(DataError, match="numbers"):
        fl_wire.put_update(c, task, 1, "n1", {"num_samples": 1, "metrics": {"a": "x"}}, good, now)
    _update(db, task, "n1", 0.5, 10)
    with db.write() as c, pytest.raises(ConflictError, match="already answered"):
        fl_wire.put_update(c, task, 1, "n1", {"num_samples": 1}, good, now)
    assert _task(db).round == 1  # none of the refused bodies counted
    db.engine.dispose()


def test_a_round_short_of_answers_at_its_deadline_fails_and_keeps_the_model(
    tmp_path: Path,
) -> None:
    db = _open(tmp_path / "control.db")
    spec = TaskSpec(model="digits-mlp", rounds=3, clients_per_round=2, min_clients=2,
                    deadline_s=1.0)  # fmt: skip
    now = time.time()
    with db.write() as c:
        fl_wire.heard(c, "n1", 100, 10, now)
        fl_wire.heard(c, "n2", 100, 10, now)
        task = fl_rounds.create(c, spec, np.ones(PARAMS), now)
        fl_rounds.advance(c, task, now)
    _update(db, task, "n1", 7.0, 10)
    with db.write() as c:
        fl_rounds.advance(c, task, now + 2.0)  # past the deadline: n2 dropped out
    row = _task(db)
    assert (
        row.state == "failed"
        and "1 accepted updates, the round needs 2" in json.loads(row.result)["reason"]
    )
    assert np.allclose(fl_store.as_float64(row.weights), 1.0)  # never half-applied
    assert json.loads(row.history)[0]["dropouts"] == ["n2"]
    db.engine.dispose()


def test_secagg_messages_of_the_wrong_step_or_form_are_refused(tmp_path: Path) -> None:
    db = _open(tmp_path / "control.db")
    spec = TaskSpec(model="digits-mlp", rounds=1, clients_per_round=2, min_clients=2, secagg=True)
    now = time.time()
    with db.write() as c:
        fl_wire.heard(c, "n1", 100, 10, now)
        fl_wire.heard(c, "n2", 100, 10, now)
        task = fl_rounds.create(c, spec, np.zeros(PARAMS), now)
        fl_rounds.advance(c, task, now)

    def send(node: str, step: str, body: bytes) -> None:
        with db.write() as c:
            fl_wire.put_update(c, task, 1, node, {"secagg": step}, body, now)
            fl_rounds.advance(c, task, now)

    with pytest.raises(ConflictError, match="step 'advertise'"):
        send("n1", "share", b"{}")
    with pytest.raises(DataError, match="64 bytes"):
        send("n1", "advertise", b"\0" * 63)
    send("n1", "advertise", b"\1" * 64)
    send("n2", "advertise", b"\2" * 64)
    assert json.loads(_task(db).secagg)["step"] == "share"  # both advertised: next step
    for bad in (b"[1]", b'{"x": "AAAA"}', b'{"1": 5}'):
        with pytest.raises(DataError, match="client index"):
            send("n1", "share", bad)
    send("n1", "share", b'{"1": "AAAA", "2": "AAAA"}')
    with pytest.raises(ConflictError, match="already sent"):
        send("n1", "share", b'{"1": "AAAA", "2": "AAAA"}')
    assert _task(db).state == "running"  # nothing refused moved or broke the task
    db.engine.dispose()
