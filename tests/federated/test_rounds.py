"""Round state machine, participation, and bad updates rejected with a reason and counted."""

from __future__ import annotations

import numpy as np
import pytest

from edgeloop.core.errors import ConfigError, ConflictError, DataError
from edgeloop.federated import (
    ClientUpdate,
    Deadline,
    FedAvg,
    ParameterLayout,
    Participation,
    RejectReason,
    RoundState,
    ServerState,
    UpdateLimits,
    close_round,
    transition,
)

S = RoundState


def test_the_happy_path_with_and_without_masking_is_allowed() -> None:
    for path in (
        [S.CREATED, S.SELECTING, S.TRAINING, S.AGGREGATING, S.EVALUATING, S.DONE],
        [S.CREATED, S.SELECTING, S.TRAINING, S.MASKING, S.AGGREGATING, S.EVALUATING, S.DONE],
    ):
        state = path[0]
        for nxt in path[1:]:
            state = transition(state, nxt)
        assert state is S.DONE


@pytest.mark.parametrize(
    ("start", "target"),
    [
        (S.CREATED, S.TRAINING),
        (S.DONE, S.FAILED),
        (S.FAILED, S.SELECTING),
        (S.EVALUATING, S.TRAINING),
    ],
)
def test_refused_transitions_name_the_allowed_ones(start: RoundState, target: RoundState) -> None:
    with pytest.raises(ConflictError, match=f"from '{start.value}' to '{target.value}'"):
        transition(start, target)


def test_every_live_state_may_fail() -> None:
    for state in (S.CREATED, S.SELECTING, S.TRAINING, S.MASKING, S.AGGREGATING, S.EVALUATING):
        assert transition(state, S.FAILED) is S.FAILED


def test_partial_participation_asks_the_fraction_but_at_least_min_clients() -> None:
    p = Participation(fraction=0.3, min_clients=4, min_available=5)
    assert p.clients_to_ask(10) == 4  # ceil(3) < 4
    assert p.clients_to_ask(100) == 30
    with pytest.raises(ConfigError, match="3 eligible clients, the round needs at least 5"):
        p.clients_to_ask(3)


LIMITS = UpdateLimits(round=3, num_params=2, max_bytes=64, selected=frozenset("abcdefghi"))


def u(node: str, w: list[float], *, rnd: int = 3, n: int = 10) -> ClientUpdate:
    return ClientUpdate(node_id=node, round=rnd, num_samples=n, weights=np.array(w))


def test_bad_updates_are_rejected_with_a_reason_and_the_round_goes_on() -> None:
    updates = [
        u("a", [1.0, 1.0]),
        u("b", [np.nan, 1.0]),
        u("c", [np.inf, 1.0]),
        u("d", [1.0, 1.0, 1.0]),
        u("e", [0.0] * 100),
        u("f", [1.0, 1.0], rnd=2),
        u("g", [1.0, 1.0], rnd=4),
        u("h", [1.0, 1.0], n=0),
        u("a", [9.0, 9.0]),
        u("zz", [1.0, 1.0]),
        u("i", [3.0, 3.0], n=30),
    ]
    out = close_round(
        round=3,
        strategy=FedAvg(),
        global_weights=np.zeros(2),
        state=ServerState(),
        selected=list("abcdefghi"),
        updates=updates,
        limits=LIMITS,
        participation=Participation(min_clients=2),
    )
    reasons = {(v.node_id, v.reason) for v in out.screening.rejected}

    assert reasons == {
        ("b", RejectReason.NOT_FINITE),
        ("c", RejectReason.NOT_FINITE),
        ("d", RejectReason.WRONG_SHAPE),
        ("e", RejectReason.OVERSIZED),
        ("f", RejectReason.REPLAYED),
        ("g", RejectReason.FUTURE_ROUND),
        ("h", RejectReason.NO_SAMPLES),
        ("a", RejectReason.DUPLICATE),
        ("zz", RejectReason.NOT_SELECTED),
    }
    assert out.screening.counts()[RejectReason.NOT_FINITE] == 2
    assert out.state is S.AGGREGATING and out.aggregate is not None
    np.testing.assert_allclose(out.aggregate.weights, [2.5, 2.5])  # (10*1 + 30*3)/40
    assert out.dropouts == tuple("bcdefgh")


def test_too_few_good_updates_fail_the_round_and_leave_no_model() -> None:
    out = close_round(
        round=3,
        strategy=FedAvg(),
        global_weights=np.zeros(2),
        state=ServerState(),
        selected=["a", "b", "c"],
        updates=[u("a", [1.0, 1.0]), u("b", [np.nan, 0.0])],
        limits=LIMITS,
        participation=Participation(min_clients=2),
    )
    assert out.state is S.FAILED and out.aggregate is None
    assert "1 accepted updates, the round needs 2" in out.reason
    assert out.dropouts == ("b", "c")


def test_layout_round_trips_named_arrays_and_names_a_wrong_shape() -> None:
    layout = ParameterLayout(("w", "b"), ((2, 3), (3,)))
    arrays = {"w": np.arange(6.0).reshape(2, 3), "b": np.array([7.0, 8.0, 9.0])}
    flat = layout.flatten(arrays)
    np.testing.assert_array_equal(flat, [0, 1, 2, 3, 4, 5, 7, 8, 9])
    back = layout.unflatten(flat)
    np.testing.assert_array_equal(back["w"], arrays["w"])
    with pytest.raises(DataError, match=r"'b' has shape \(2,\), expected \(3,\)"):
        layout.flatten({"w": arrays["w"], "b": np.zeros(2)})


def test_a_round_closes_when_all_answered_or_at_the_deadline() -> None:
    d = Deadline(seconds=30.0)
    assert not d.should_close(elapsed_s=10.0, answered=7, asked=10)
    assert d.should_close(elapsed_s=10.0, answered=10, asked=10)
    assert d.should_close(elapsed_s=30.0, answered=7, asked=10)  # stragglers are dropouts
    with pytest.raises(ConfigError, match="deadline"):
        Deadline(seconds=0)
