from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeloop.core.errors import ConfigError
from edgeloop.optimize.pareto import Budget, Objective, Point, choose, closest, pareto_front

FP32 = Point("fp32", 0.99, 0.10, 240_000)
INT8 = Point("static-int8", 0.985, 0.06, 65_000)
FP16 = Point("fp16", 0.99, 0.11, 120_000)
BAD = Point("bad", 0.90, 0.20, 300_000)


def test_front_drops_dominated_rows() -> None:
    front = pareto_front([FP32, INT8, FP16, BAD])
    assert [p.recipe for p in front] == ["fp32", "static-int8", "fp16"]


def test_choose_by_objective_within_budget() -> None:
    best, fitting = choose([FP32, INT8, FP16], Budget(max_size_kb=100))
    assert best == INT8 and fitting == [INT8]
    rows = [FP32, INT8, FP16]
    assert choose(rows, Budget(min_accuracy=0.98))[0] == INT8  # fastest that fits
    assert choose(rows, Budget(min_accuracy=0.98), Objective.ACCURACY)[0] == FP32  # tie -> faster
    assert choose(rows, Budget(min_accuracy=0.986), Objective.SIZE)[0] == FP16


def test_budget_no_variant_meets_names_what_failed() -> None:
    budget = Budget(max_latency_ms=0.01, min_accuracy=0.999)
    assert choose([FP32, INT8], budget) == (None, [])
    reasons = budget.violations(INT8)
    assert any("latency 0.060 ms > 0.01 ms" in r for r in reasons)
    assert any("accuracy 0.9850 < 0.999" in r for r in reasons)
    assert closest([BAD, FP32, INT8], budget, k=2)[0] == INT8


def test_ram_budget_without_a_ram_figure_is_a_violation() -> None:
    assert Budget(max_ram_mb=50).violations(FP32) == ["peak RAM was not measured"]


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [({"max_latency_ms": 0}, "max-latency-ms"), ({"min_accuracy": 97}, "[0, 1]")],
)
def test_bad_budgets(kwargs: dict[str, float], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        Budget(**kwargs)


points = st.builds(
    Point,
    recipe=st.sampled_from(["a", "b", "c"]),
    accuracy=st.floats(0, 1),
    latency_ms=st.floats(0.001, 100),
    size_bytes=st.integers(1, 10**7),
)


@settings(deadline=None)  # no per-example time limit: a loaded CI machine stalls at will
@given(st.lists(points, min_size=1, max_size=30))
def test_front_is_non_dominated_and_covers_everything(rows: list[Point]) -> None:
    front = pareto_front(rows)
    assert front
    assert not any(a.dominates(b) for a in front for b in front)
    # every row is either on the front or dominated by (or equal to) a front row
    for r in rows:
        assert any(
            f.dominates(r)
            or (f.accuracy, f.latency_ms, f.size_bytes) == (r.accuracy, r.latency_ms, r.size_bytes)
            for f in front
        )
