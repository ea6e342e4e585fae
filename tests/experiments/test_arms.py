"""Node summaries sum to the fleet's exactly: merging equals summarising the pooled data."""

from __future__ import annotations

import numpy as np
import pytest

from edgeloop.core.errors import DataError, EdgeError
from edgeloop.experiments import BernoulliSummary, ContinuousSummary, merge_all, merge_by_class


def test_merged_continuous_node_summaries_equal_the_pooled_summary() -> None:
    rng = np.random.default_rng(5)
    nodes = [rng.gamma(2.0, 10.0, size=k) for k in (1, 37, 500, 0, 4)]
    merged = merge_all(ContinuousSummary.from_values(v) for v in nodes)
    pooled = ContinuousSummary.from_values(np.concatenate(nodes))
    assert isinstance(merged, ContinuousSummary)
    assert merged.count == pooled.count == 542
    assert merged.mean == pytest.approx(pooled.mean, rel=1e-12)
    assert merged.m2 == pytest.approx(pooled.m2, rel=1e-10)
    assert merged.variance == pytest.approx(float(np.var(np.concatenate(nodes), ddof=1)))


def test_merged_bernoulli_node_summaries_equal_the_pooled_summary() -> None:
    rng = np.random.default_rng(6)
    nodes = [rng.random(k) < 0.9 for k in (10, 200, 3)]
    merged = merge_all(BernoulliSummary.from_outcomes(o) for o in nodes)
    assert merged == BernoulliSummary.from_outcomes(np.concatenate(nodes))


def test_device_class_reports_sum_class_by_class() -> None:
    node_a = {"pi4": BernoulliSummary(90, 100), "jetson": BernoulliSummary(45, 50)}
    node_b = {"pi4": BernoulliSummary(8, 10)}
    assert merge_by_class([node_a, node_b]) == {
        "jetson": BernoulliSummary(45, 50),
        "pi4": BernoulliSummary(98, 110),
    }


@pytest.mark.parametrize(
    "make",
    [
        lambda: BernoulliSummary(-1, 10),
        lambda: BernoulliSummary(3, -1),
        lambda: BernoulliSummary(11, 10),
        lambda: ContinuousSummary(-2),
        lambda: ContinuousSummary(3, 1.0, -0.5),
        lambda: ContinuousSummary(3, float("nan"), 0.0),
        lambda: ContinuousSummary.from_values([1.0, float("inf")]),
        lambda: merge_all([BernoulliSummary(1, 2), ContinuousSummary(2, 1.0, 0.0)]),
        lambda: merge_all([]),
    ],
)
def test_bad_counts_are_data_errors(make) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DataError) as caught:
        make()
    assert isinstance(caught.value, EdgeError) and caught.value.hint
