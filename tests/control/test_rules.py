"""The pure parts of rollouts: wave arithmetic, the guard's verdict, the transition set."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeloop.control.deployments import Guard, Plan, compute_waves
from edgeloop.control.guard import Verdict, check_node
from edgeloop.control.rollout import TRANSITIONS, State
from edgeloop.core.errors import ConfigError

SHA = "a" * 64
waves_text = st.one_of(st.integers(1, 50).map(str), st.integers(1, 100).map(lambda p: f"{p}%"))


@given(st.integers(0, 60), st.lists(waves_text, min_size=1, max_size=6))
def test_waves_are_ordered_disjoint_non_empty_prefixes(count: int, plan: list[str]) -> None:
    nodes = [f"n{i}" for i in range(count)]
    waves = compute_waves(nodes, plan)
    flat = [n for wave in waves for n in wave]
    assert flat == nodes[: len(flat)]  # in order, no node twice
    assert all(waves)
    reached = 0
    for entry in plan:  # the cumulative target of the plan's largest entry is reached
        number = int(entry.rstrip("%"))
        target = math.ceil(count * number / 100) if entry.endswith("%") else number
        reached = max(reached, min(count, max(target, 1)))
    assert len(flat) == (reached if count else 0)


def test_the_usual_plan_on_ten_nodes() -> None:
    nodes = [f"n{i}" for i in range(10)]
    sizes = [len(w) for w in compute_waves(nodes, ["1", "10%", "50%", "100%"])]
    assert sizes == [1, 4, 5]  # "10%" of 10 is 1 node, already reached by "1"


@pytest.mark.parametrize("bad", [[], ["0"], ["101%"], ["ten"], ["-1"]])
def test_bad_wave_plans_are_refused(bad: list[str]) -> None:
    with pytest.raises(ConfigError):
        Plan(tuple(bad))


def _report(**changes: object) -> dict[str, object]:
    report: dict[str, object] = {
        "revision": 3,
        "updater": {"state": "IDLE", "error": None, "failed_revision": None},
        "active": {"sha256": SHA},
        "self_test": {"passed": True},
        "health": {"requests": 100, "error_rate": 0.01, "p99_ms": 20.0},
    }
    report.update(changes)
    return report


GUARD = Guard(max_error_rate=0.05, max_p99_ms=50.0, min_requests=10)


@pytest.mark.parametrize(
    ("report", "verdict", "words"),
    [
        (None, Verdict.WAITING, "no report"),
        (_report(revision=2), Verdict.WAITING, "waiting for 3"),
        (_report(), Verdict.HEALTHY, "error rate"),
        (_report(updater={"failed_revision": 3, "error": "boom"}), Verdict.FAILED, "boom"),
        (_report(active={"sha256": "b" * 64}), Verdict.FAILED, "instead of the new model"),
        (_report(active=None), Verdict.FAILED, "serves nothing"),
        (_report(self_test={"passed": False}), Verdict.FAILED, "self-test"),
        (_report(health={"requests": 100, "error_rate": 0.2}), Verdict.FAILED, "error rate"),
        (_report(health={"requests": 100, "p99_ms": 99.0}), Verdict.FAILED, "p99"),
        (_report(health={"requests": 5, "error_rate": 0.9}), Verdict.HEALTHY, "min_requests"),
        (_report(health={"requests": 100, "error_rate": None}), Verdict.HEALTHY, "None"),
    ],
)
def test_guard_verdicts(report: dict[str, object] | None, verdict: Verdict, words: str) -> None:
    check = check_node(report, 3, SHA, GUARD)
    assert check.verdict is verdict
    assert words in check.detail


def test_transitions_allow_manual_rollback_from_anywhere_and_nothing_after_completion() -> None:
    assert all((s, State.ROLLED_BACK) in TRANSITIONS for s in State)
    assert {new for old, new in TRANSITIONS if old is State.COMPLETED} == {State.ROLLED_BACK}
    assert (State.HALTED, State.WAVE) not in TRANSITIONS
    assert (State.PENDING, State.SOAKING) not in TRANSITIONS
