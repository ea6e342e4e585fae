"""Variant policies: pure decisions over explicit times and figures (no clock, no sleeping)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeloop.core.errors import ConfigError
from edgeloop.runtime import (
    LoadPolicy,
    LoadSwitch,
    PowerBasis,
    PowerPolicy,
    PowerSwitch,
    VariantPower,
)

POLICY = LoadPolicy(("fp32", "int8", "pruned"), high_ms=20.0, low_ms=5.0, window_s=1.0)


def _feed(policy: LoadPolicy, delays: list[tuple[float, float]]) -> list[str]:
    """Observe (time, queue_ms) pairs in order; return the variant after each one."""
    state = policy.start(0.0)
    seen = []
    for now, ms in delays:
        state = policy.observe(state, ms, now)
        seen.append(policy.variant(state))
    return seen


def test_high_delay_for_a_window_steps_to_the_cheaper_variant() -> None:
    # Window [0, 1): mean 30 ms > 20 -> int8 once the window closes at t=1.0.
    seen = _feed(POLICY, [(0.1, 30), (0.5, 30), (0.9, 30), (1.0, 30)])
    assert seen == ["fp32", "fp32", "fp32", "int8"]


def test_one_slow_request_does_not_switch_when_the_window_mean_is_low() -> None:
    seen = _feed(POLICY, [(0.1, 100), *[(0.2 + i / 100, 1) for i in range(20)], (1.5, 1)])
    assert seen[-1] == "fp32"  # mean (100 + 20) / 21 = 5.7 ms: below the high mark


def test_hysteresis_keeps_the_cheap_variant_between_the_marks() -> None:
    state = POLICY.start(0.0)
    state = POLICY.observe(state, 50, 0.5)
    state = POLICY.observe(state, 10, 1.2)  # closes [0, 1) at mean 50: -> int8
    assert POLICY.variant(state) == "int8"
    for t in range(2, 8):  # mean 10 ms: between low (5) and high (20): stay
        state = POLICY.observe(state, 10, t + 0.2)
    assert POLICY.variant(state) == "int8"
    state = POLICY.observe(state, 1, 8.3)  # closes the window at mean 10: stay
    state = POLICY.observe(state, 1, 9.4)  # closes the window at mean 1 < 5: back
    assert POLICY.variant(state) == "fp32"
    assert state.switches == 2
    assert "< 5.0 ms" in state.reason


def test_idle_windows_count_as_no_delay() -> None:
    state = POLICY.start(0.0)
    state = POLICY.observe(state, 90, 0.1)
    state = POLICY.observe(state, 90, 1.1)  # -> int8
    state = POLICY.observe(state, 90, 2.1)  # -> pruned
    assert POLICY.variant(state) == "pruned"
    state = POLICY.tick(state, 10.0)  # window [2.1, 3.1) mean 90: stays; then idle windows
    assert POLICY.variant(state) == "int8"
    assert POLICY.variant(POLICY.tick(state, 11.0)) == "fp32"


delays = st.lists(
    st.tuples(st.floats(0.01, 3.0), st.floats(0, 200, allow_nan=False)), max_size=60
).map(lambda steps: [(sum(d for d, _ in steps[: i + 1]), ms) for i, (_, ms) in enumerate(steps)])


@settings(deadline=None)  # no per-example time limit: a loaded CI machine stalls at will
@given(delays)
def test_level_stays_in_range_and_every_change_is_counted(steps: list[tuple[float, float]]) -> None:
    state = POLICY.start(0.0)
    changes = 0
    for now, ms in steps:
        before = state.level
        state = POLICY.observe(state, ms, now)
        assert 0 <= state.level < len(POLICY.variants)
        changes += int(state.level != before)
    assert state.switches == changes


@settings(deadline=None)  # no per-example time limit: a loaded CI machine stalls at will
@given(st.lists(st.floats(5.0, 20.0), min_size=1, max_size=50))
def test_delays_between_the_marks_never_switch(values: list[float]) -> None:
    state = POLICY.start(0.0)
    for i, ms in enumerate(values):
        state = POLICY.observe(state, ms, 0.6 * i)  # windows of one or two requests
    assert state.switches == 0


def test_load_switch_reads_its_clock_and_counts() -> None:
    now = [0.0]
    switch = LoadSwitch(LoadPolicy(("full", "lite"), 10.0, 2.0, 1.0), clock=lambda: now[0])
    assert switch.observe(50) == "full"
    now[0] = 1.5
    assert switch.observe(50) == "lite"
    now[0] = 4.0
    assert switch.variant == "full"  # the idle time closed the window at mean 50, then idle
    stats = switch.stats()
    assert (stats.policy, stats.variant, stats.switches) == ("load", "full", 2)
    assert stats.to_dict()["switches"] == 2


@pytest.mark.parametrize(
    ("kwargs", "bad"),
    [
        ({"variants": ("only",)}, r"\['only'\]"),
        ({"variants": ("a", "a")}, r"\['a', 'a'\]"),
        ({"high_ms": 5.0, "low_ms": 5.0}, "low_ms=5.0 must be >= 0 and below high_ms=5.0"),
        ({"low_ms": -1.0}, "low_ms=-1.0"),
        ({"window_s": 0.0}, "window_s=0.0"),
        ({"high_ms": float("inf")}, "high_ms=inf"),
    ],
)
def test_bad_load_policy_names_the_value(kwargs: dict[str, Any], bad: str) -> None:
    args: dict[str, Any] = {"variants": ("a", "b"), "high_ms": 20.0, "low_ms": 5.0} | kwargs
    with pytest.raises(ConfigError, match=bad):
        LoadPolicy(**args)


STATED = {
    "fp32": VariantPower("fp32", 7.5, PowerBasis.STATED, "jetson-nano profile, 10 W mode"),
    "int8": VariantPower("int8", 4.0, PowerBasis.STATED, "jetson-nano profile, 10 W mode"),
}


def test_power_budget_picks_the_best_variant_that_fits() -> None:
    policy = PowerPolicy(("fp32", "int8"), budget_w=5.0)
    decision = policy.decide(STATED)
    assert decision.variant == "int8" and decision.within_budget
    assert decision.basis is PowerBasis.STATED
    assert decision.source == "jetson-nano profile, 10 W mode"
    assert PowerPolicy(("fp32", "int8"), budget_w=8.0).decide(STATED).variant == "fp32"


def test_no_variant_fits_takes_the_lowest_and_says_so() -> None:
    decision = PowerPolicy(("fp32", "int8"), budget_w=3.0).decide(STATED)
    assert decision.variant == "int8" and not decision.within_budget
    assert "exceeds" in decision.reason and "3.0 W" in decision.reason


def test_missing_figures_are_named() -> None:
    policy = PowerPolicy(("fp32", "int8", "pruned"), budget_w=5.0)
    assert "no figure for pruned" in policy.decide(STATED).reason
    unknown = policy.decide({})
    assert unknown.variant == "fp32" and unknown.watts is None and not unknown.within_budget


@dataclass(frozen=True)
class Reading:  # the shape of edgeloop.bench.power.PowerReading
    watts: float | None
    source: str


def test_a_meter_reading_replaces_the_stated_figure_and_switches() -> None:
    switch = PowerSwitch(PowerPolicy(("fp32", "int8"), budget_w=8.0), STATED)
    assert switch.decision.variant == "fp32"
    decision = switch.record(Reading(9.2, "rapl (package-0)"))  # fp32 measured above budget
    assert decision.variant == "int8"
    assert switch.stats().switches == 1
    measured = switch.record(Reading(None, "no power meter on this machine"))  # no change
    assert measured.variant == "int8" and measured.basis is PowerBasis.STATED
    switch.set_budget(10.0)  # fp32 now measured 9.2 W: fits
    assert switch.decision.variant == "fp32"
    assert switch.decision.basis is PowerBasis.MEASURED
    assert switch.decision.source == "rapl (package-0)"
    assert switch.stats().switches == 2
    assert switch.decision.to_dict()["basis"] == "measured"


@pytest.mark.parametrize(
    ("make", "bad"),
    [
        (lambda: PowerPolicy(("a", "b"), budget_w=0.0), "budget 0.0 W"),
        (lambda: PowerPolicy(("a", "b"), budget_w=float("nan")), "budget nan W"),
        (lambda: VariantPower("a", -1.0, PowerBasis.STATED, "x"), "'a': -1.0 W"),
        (lambda: VariantPower("a", 1.0, PowerBasis.STATED, ""), "'a': a power figure needs"),
    ],
)
def test_bad_power_settings_name_the_value(make: Any, bad: str) -> None:
    with pytest.raises(ConfigError, match=bad):
        make()
