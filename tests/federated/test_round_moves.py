"""What wakes the waiting nodes, and where a round's time went, in-process on real SQLite rows.

The control plane wakes the nodes waiting in their long poll only when ``advance`` says a task
moved, and another replica's move shows in ``signature``; an upload that leaves the round open
must move nothing (else ten uploads wake ten waiters each, the cost this fixed). The round
record's ``phases_s`` comes from the stored messages' times.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edgeloop.control import fl_rounds, fl_store, fl_wire
from edgeloop.control.fl_store import TaskSpec
from edgeloop.federated.models import fl_model
from edgeloop.registry.database import connect

PARAMS = fl_model("digits-mlp").num_params


def test_only_the_last_upload_moves_the_task_and_the_round_records_its_phases(
    tmp_path: Path,
) -> None:
    db = connect(f"sqlite:///{tmp_path / 'control.db'}")
    fl_store.create_tables(db)
    t0 = 1_000.0
    spec = TaskSpec(model="digits-mlp", rounds=2, clients_per_round=2, min_clients=2,
                    deadline_s=600)  # fmt: skip
    body = np.ones(PARAMS, dtype="<f4").tobytes()
    with db.write() as c:
        fl_wire.heard(c, "n1", 100, 10, t0)
        fl_wire.heard(c, "n2", 100, 10, t0)
        task = fl_rounds.create(c, spec, np.zeros(PARAMS), t0)
        assert fl_rounds.advance(c, task, t0)  # round 1 selected
        before = fl_rounds.signature(c)
        assert not fl_rounds.advance(c, task, t0 + 0.1)  # nobody answered: nothing moved
        fl_wire.record_download(c, task, 1, "n1", len(body), t0 + 0.02)
        fl_wire.record_download(c, task, 1, "n2", len(body), t0 + 0.05)
        metrics = {"loss": 1.0, "fetch_s": 0.01, "train_s": 0.04}
        fl_wire.put_update(c, task, 1, "n1", {"num_samples": 100, "metrics": metrics}, body,
                           t0 + 0.1)  # fmt: skip
        assert not fl_rounds.advance(c, task, t0 + 0.1)  # one of two: the round stays open
        assert fl_rounds.signature(c) == before
        slow = metrics | {"fetch_s": 0.03, "train_s": 0.09}
        fl_wire.put_update(c, task, 1, "n2", {"num_samples": 100, "metrics": slow}, body,
                           t0 + 0.2)  # fmt: skip
        assert fl_rounds.advance(c, task, t0 + 0.25)  # closed, round 2 selected
        after = fl_rounds.signature(c)
        row = fl_rounds.task_row(c, task)
    assert after != before and [s[1:3] for s in after] == [(2, "training")]
    phases = json.loads(row.history)[0]["phases_s"]
    assert np.allclose(phases["download"], [0.02, 0.05])
    assert np.allclose(phases["update"], [0.1, 0.2])
    assert np.isclose(phases["close"], 0.25)
    assert phases["client_fetch_s"] == [0.01, 0.03]
    assert phases["client_train_s"] == [0.04, 0.09]
    db.engine.dispose()
