"""The fleet experiment's pure parts: node reports summed per arm, the look's frozen decision,
the state machine, and the agent's refusal of a malformed experiment block (no servers)."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest

from edgeloop.agent.experiment_spec import parse_experiment
from edgeloop.control import experiment_store as store
from edgeloop.control.experiment_arms import sum_reports
from edgeloop.control.experiment_look import look
from edgeloop.core.errors import ConflictError, UntrustedArtifactError
from edgeloop.experiments import BernoulliSummary, ExperimentState, Metric
from edgeloop.serving.metrics import LATENCY_BUCKETS

SHA = "ab" * 32


def _arm(requests: int, labelled: int, correct: int, slow: int = 0) -> dict[str, Any]:
    fast = requests - slow  # fast ones in the first bucket, slow ones above every bound
    return {"requests": requests, "errors": 1, "labelled": labelled, "correct": correct,
            "latency": {"count": requests, "sum_s": 0.001 * requests,
                        "buckets": [fast] * len(LATENCY_BUCKETS)}}  # fmt: skip


def _report(
    exp_id: str, arms: dict[str, Any], state: str = "serving", since: str = "t0"
) -> dict[str, Any]:
    doc = {"id": exp_id, "state": state, "arms": arms, "since": since}
    return {"active": {"version": 1, "experiment": doc}}


def _exp(**changes: Any) -> store.Experiment:
    fields: dict[str, Any] = dict(
        experiment_id="exp-1", name="n", model="lin", champion=1, challenger=2, split=0.5,
        config={"metric": "accuracy", "alpha": 0.05, "min_effect": 0.2,
                "horizon_per_arm": 10_000, "latency_threshold_ms": 1.0},
        nodes=("a", "b"), state=store.ExpState.RUNNING, rollout_id=None, look=None,
        tests=ExperimentState(), history=(), created_at=0.0, updated_at=0.0,
    )  # fmt: skip
    fields.update(changes)
    return store.Experiment(**fields)


def test_node_reports_sum_per_arm_and_other_experiments_add_nothing() -> None:
    reports = [
        ("a", "pi4", _report("exp-1", {"1": _arm(10, 8, 4), "2": _arm(12, 10, 9, slow=3)})),
        ("b", "pi4", _report("exp-1", {"1": _arm(5, 5, 2), "2": _arm(6, 6, 6)})),
        ("c", "pi4", _report("exp-0", {"1": _arm(99, 99, 99)})),  # an old experiment's
        ("d", "jetson", _report("exp-1", {}, state="failed")),
        ("e", "pi4", None),
    ]
    fleet = sum_reports("exp-1", ("1", "2"), reports)
    assert (fleet.control.requests, fleet.control.labelled, fleet.control.correct) == (15, 13, 6)
    assert (fleet.treatment.requests, fleet.treatment.correct, fleet.treatment.errors) == (
        18,
        15,
        2,
    )
    slow = fleet.treatment.summary(Metric.LATENCY_P99, 0.0001)
    failed = fleet.treatment.summary(Metric.ERROR_RATE, 0.1)
    # both are counts of requests (Bernoulli), not continuous values
    assert isinstance(slow, BernoulliSummary) and slow.successes == 3
    assert isinstance(failed, BernoulliSummary) and failed.trials == 18
    assert {n: d["state"] for n, d in fleet.nodes.items()} == {
        "a": "serving", "b": "serving", "c": "waiting", "d": "failed", "e": "waiting"}  # fmt: skip
    assert list(fleet.by_class) == ["pi4"]


def test_a_decision_once_reached_is_kept_at_later_looks() -> None:
    good = [("a", "pi4", _report("exp-1", {"1": _arm(60, 60, 20), "2": _arm(60, 60, 60)}))]
    first, tests = look(_exp(), good)
    assert first["verdict"]["decision"] == "promote_treatment"
    # counts only grow (a drop would read as a restart): the challenger now right on 60 of 600
    reversed_ = [
        ("a", "pi4", _report("exp-1", {"1": _arm(600, 600, 600), "2": _arm(600, 600, 60)}))
    ]
    later, _ = look(_exp(look=first, tests=tests), reversed_)
    assert later["verdict"] == first["verdict"]
    assert later["arms"]["champion"]["labelled"] == 600  # the figures still move


def test_no_observation_yet_is_a_reason_not_an_error() -> None:
    doc, tests = look(_exp(), [("a", "pi4", None)])
    assert doc["verdict"] is None and "no accuracy observations" in doc["reason"]
    assert tests == ExperimentState()


def test_moves_outside_the_state_machine_are_409() -> None:
    with pytest.raises(ConflictError, match="PROMOTED; it cannot go to REVERTING"):
        store.check_move(_exp(state=store.ExpState.PROMOTED), store.ExpState.REVERTING)
    store.check_move(_exp(), store.ExpState.PROMOTING)


def _doc(block: Any) -> bytes:
    return json.dumps({"serving": {"experiment": block}}).encode()


def _block(**changes: Any) -> dict[str, Any]:
    challenger = {"name": "lin", "version": 2, "target": "artifacts/lin-2.onnx", "sha256": SHA,
                  "length": 10, "self_test": None}  # fmt: skip
    return {"id": "exp-1", "model": "lin", "champion": 1, "challenger": challenger,
            "split": 0.3, **changes}  # fmt: skip


def test_the_agent_reads_a_good_block_and_refuses_bad_ones() -> None:
    spec = parse_experiment(_doc(_block()), "lin", 1)
    assert spec is not None and spec.versions == ("1", "2") and spec.split == 0.3
    assert parse_experiment(b'{"serving": {}}', "lin", 1) is None
    bad = [
        _block(split=1.0),
        _block(split=True),
        _block(champion=3),
        _block(model="other"),
        _block(id="../x"),
        _block(challenger={**_block()["challenger"], "version": 1}),
        _block(challenger={**_block()["challenger"], "target": "../etc/passwd"}),
        _block(challenger={**_block()["challenger"], "sha256": "00"}),
    ]
    shadow = parse_experiment(_doc({**_block(shadow=True), "split": 0.0}), "lin", 1)
    assert shadow is not None and shadow.shadow and shadow.split == 0.0
    block = _block(shadow=True)
    del block["split"]
    assert parse_experiment(_doc(block), "lin", 1) == shadow
    bad += [_block(shadow=True), _block(shadow="yes"), {**block, "shadow": 1}]
    for block in bad:
        with pytest.raises(UntrustedArtifactError):
            parse_experiment(_doc(block), "lin", 1)


def test_a_guardrail_stops_a_challenger_that_fails_more() -> None:
    config = {**_exp().config, "guardrails": [{"metric": "error_rate", "margin": 0.01}]}
    arms = {"1": {**_arm(400, 60, 20), "errors": 0}, "2": {**_arm(400, 60, 60), "errors": 120}}
    doc, _ = look(_exp(config=config), [("a", "pi4", _report("exp-1", arms))])
    assert doc["verdict"]["decision"] == "stopped_by_guardrail"
    assert doc["verdict"]["tripped"] == "error_rate"


def test_an_agent_restart_never_takes_counts_back() -> None:
    """A restarted agent reports a new ``since`` and counts from 0 again; a node that reports
    nothing for a while still adds what it had counted: the fleet's sums only grow."""
    exp, seen = _exp(), []
    sequence = [
        _report("exp-1", {"1": _arm(10, 8, 4), "2": _arm(12, 10, 9)}),
        _report("exp-1", {"1": _arm(20, 18, 9), "2": _arm(22, 20, 19)}),
        None,  # restarting: no experiment in the report
        _report("exp-1", {"1": _arm(3, 2, 1), "2": _arm(4, 4, 4)}, since="t1"),
        _report("exp-1", {"1": _arm(1, 1, 1), "2": _arm(1, 1, 1)}, since="t1"),  # lower: reset
        _report("exp-1", {"1": _arm(5, 4, 2), "2": _arm(6, 5, 5)}, since="t1"),
    ]
    for report in sequence:
        doc, tests = look(exp, [("a", "pi4", report)])
        exp = _exp(look=doc, tests=tests)
        arms = doc["arms"]
        seen.append([arms[a][k] for a in ("champion", "challenger")
                     for k in ("requests", "labelled", "correct")])  # fmt: skip
    assert all(all(a <= b for a, b in zip(x, y, strict=True)) for x, y in itertools.pairwise(seen))
    # before the restart 20/22, then 3/4 since it, then 1/1 after another reset, then 5/6
    assert seen[-1][0] == 20 + 3 + 5 and seen[-1][3] == 22 + 4 + 6
    assert seen[-1][2] == 9 + 1 + 2 and seen[-1][5] == 19 + 4 + 5


def test_the_loop_looks_at_a_bounded_number_of_experiments_per_tick_in_turn() -> None:
    """The control loop's look is bounded per tick and every open experiment gets its turn."""
    import sqlalchemy as sa

    from edgeloop.control.experiment_tick import ExperimentTicker

    engine = sa.create_engine("sqlite://")
    store.metadata_obj.create_all(engine)
    with engine.begin() as conn:
        for i in range(6):
            exp_id = store.insert(conn, "n", f"m{i}", 1, 2, 0.5, {}, ["a"])
            if i == 5:  # one over: never looked at
                conn.execute(store.experiments.update()
                             .where(store.experiments.c.experiment_id == exp_id)
                             .values(state=store.ExpState.REVERTED.value))  # fmt: skip
        ticker, seen = ExperimentTicker(per_tick=2), []
        for _ in range(5):
            ids = ticker._next(conn)
            assert len(ids) == 2
            ticker.after = ids[-1]
            seen += ids
    open_ = sorted(set(seen))
    assert len(open_) == 5 and seen == open_ * 2  # the 5 open ones in turn, wrapping around


def test_the_sdk_takes_the_split_in_percent() -> None:
    from edgeloop.core.errors import ConfigError
    from edgeloop.sdk.experiments import share_of

    assert share_of(50) == 0.5 and share_of(0.5) == 0.005
    for bad in (0, 100, 150, -5, float("nan"), True):
        with pytest.raises(ConfigError, match="outside 0-100|not a number"):
            share_of(bad)


def test_a_new_experiment_is_two_point_and_a_stored_one_without_mixing_stays_normal() -> None:
    import inspect

    from edgeloop.cli.fleet_experiment import start
    from edgeloop.control.experiment_look import config_of
    from edgeloop.control.experiments import DEFAULT_MIXING, StartRequest
    from edgeloop.control.experiments_api import ExperimentBody
    from edgeloop.experiments import Mixing

    assert DEFAULT_MIXING is Mixing.TWO_POINT
    assert StartRequest("n", "lin", 1, 2, 0.5).mixing == "two_point"
    assert ExperimentBody.model_fields["mixing"].default == "two_point"
    assert inspect.signature(start).parameters["mixing"].default == "two_point"
    # an experiment stored before the default changed (no mixing) keeps what it was run with
    assert config_of(_exp()).mixing is Mixing.NORMAL
    stored = _exp(config={**_exp().config, "mixing": "two_point"})
    assert config_of(stored).mixing is Mixing.TWO_POINT
