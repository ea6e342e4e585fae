"""Selection strategies: determinism under a seed, a reason per candidate, the right picks."""

from __future__ import annotations

import pytest

from edgeloop.core.errors import ConfigError, NotFoundError
from edgeloop.federated.selection import (
    SELECTORS,
    Candidate,
    FairnessSelector,
    PowerOfChoiceSelector,
    PowerSource,
    ResourceAwareSelector,
    UniformSelector,
    Why,
    highest_loss,
)

FLEET = [Candidate(f"n{i}", num_samples=10 * (i + 1), local_loss=float(i % 5)) for i in range(10)]


def test_uniform_is_deterministic_per_seed_and_round_and_skips_offline_nodes() -> None:
    fleet = [*FLEET[:9], Candidate("n9", online=False)]
    a = UniformSelector(seed=7).select(fleet, 4, round=3)
    assert a == UniformSelector(seed=7).select(fleet, 4, round=3)
    assert a.chosen != UniformSelector(seed=7).select(fleet, 4, round=4).chosen
    assert len(set(a.chosen)) == 4 and "n9" not in a.chosen
    assert a.reason("n9").why is Why.OFFLINE
    assert {d.why for d in a.decisions if d.chosen} == {Why.SAMPLED}
    assert len(a.decisions) == 10


def test_uniform_picks_every_node_about_equally_often() -> None:
    counts = dict.fromkeys((c.node_id for c in FLEET), 0)
    for rnd in range(500):
        for n in UniformSelector(seed=1).select(FLEET, 3, rnd).chosen:
            counts[n] += 1
    # 1500 picks over 10 nodes: 150 each; binomial sd ~ 11
    assert all(100 < v < 200 for v in counts.values()), counts


def test_resource_aware_filters_by_status_and_prefers_mains_then_data() -> None:
    fleet = [
        Candidate("off", online=False, power=PowerSource.MAINS, num_samples=500),
        Candidate("mcu", device_class="mcu", power=PowerSource.MAINS, num_samples=500),
        Candidate("low", power=PowerSource.BATTERY, battery=0.2, num_samples=500),
        Candidate("empty", power=PowerSource.MAINS, num_samples=0),
        Candidate("bat", power=PowerSource.BATTERY, battery=0.9, num_samples=400),
        Candidate("small", power=PowerSource.MAINS, num_samples=50),
        Candidate("big", power=PowerSource.MAINS, num_samples=300),
    ]
    sel = ResourceAwareSelector(device_classes=frozenset({"default"}), min_battery=0.5)
    out = sel.select(fleet, 2, round=1)
    assert out.chosen == ("big", "small")  # mains before battery, more data first
    why = {d.node_id: d.why for d in out.decisions}
    assert why == {
        "off": Why.OFFLINE,
        "mcu": Why.DEVICE_CLASS,
        "low": Why.LOW_BATTERY,
        "empty": Why.TOO_LITTLE_DATA,
        "bat": Why.RANKED_OUT,
        "small": Why.RANKED_IN,
        "big": Why.RANKED_IN,
    }
    assert sel.select(fleet, 3, round=1).chosen == ("big", "small", "bat")


def test_power_of_choice_picks_the_highest_losses_of_its_candidate_set() -> None:
    sel = PowerOfChoiceSelector(d=6, seed=3)
    out = sel.select(FLEET, 2, round=1)
    pool = [d.node_id for d in out.decisions if d.why is not Why.NOT_IN_CANDIDATE_SET]
    assert len(pool) == 6
    losses = {c.node_id: c.local_loss for c in FLEET if c.node_id in pool}
    top = sorted(losses.values(), reverse=True)[:2]
    assert sorted((losses[n] for n in out.chosen), reverse=True) == top
    assert all(d.why is Why.HIGHER_LOSS for d in out.decisions if d.chosen)
    assert out == sel.select(FLEET, 2, round=1)
    # with d = all nodes it is plain "highest loss": n4 and n9 have loss 4
    assert set(PowerOfChoiceSelector(d=10).select(FLEET, 2, round=5).chosen) == {"n4", "n9"}


def test_highest_loss_breaks_ties_by_id() -> None:
    assert highest_loss({"b": 1.0, "a": 1.0, "c": 0.5}, 2) == ("a", "b")


def test_power_of_choice_needs_d_at_least_k() -> None:
    with pytest.raises(ConfigError, match="d >= k"):
        PowerOfChoiceSelector(d=2).select(FLEET, 3, round=1)


def test_fairness_asks_the_least_recently_selected_first() -> None:
    fleet = [
        Candidate("a", last_selected=5),
        Candidate("b", last_selected=None),
        Candidate("c", last_selected=2),
        Candidate("d", last_selected=2),
        Candidate("e", online=False),
    ]
    out = FairnessSelector().select(fleet, 3, round=6)
    assert out.chosen == ("b", "c", "d")
    assert out.reason("a").why is Why.SELECTED_MORE_RECENTLY
    assert out.reason("b").detail == "never"


def test_selectors_are_registered_by_name() -> None:
    assert SELECTORS.names() == ("fairness", "power-of-choice", "resource", "uniform")
    assert SELECTORS.create("uniform", seed=2) == UniformSelector(seed=2)
    with pytest.raises(NotFoundError, match="known: fairness, power-of-choice"):
        SELECTORS.create("oort")
