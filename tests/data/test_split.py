"""Stratified split: each class in each part, disjoint, deterministic; hypothesis properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeloop.core.errors import ConfigError, DataError
from edgeloop.data import Dataset, Modality, Splits, stratified_split


def labelled(counts: list[int]) -> Dataset:
    """Sample i holds the value i, so parts can be traced back to the original indices."""
    y = np.repeat(np.arange(len(counts)), counts).astype(np.int64)
    x = np.arange(len(y), dtype=np.float32).reshape(-1, 1)
    return Dataset("counts", x, y, tuple(f"c{k}" for k in range(len(counts))), Modality.TABULAR)


def ids(part: Dataset) -> set[int]:
    return {int(v) for v in part.x[:, 0]}


def check_partition(ds: Dataset, splits: Splits) -> None:
    parts = [ids(splits.train), ids(splits.val), ids(splits.test)]
    assert sum(len(p) for p in parts) == len(ds)
    assert set().union(*parts) == set(range(len(ds)))
    for part in (splits.train, splits.val, splits.test):
        assert np.array_equal(part.y, ds.y[part.x[:, 0].astype(int)])


def test_every_class_in_every_part_in_proportion() -> None:
    ds = labelled([100, 40, 3])
    s = stratified_split(ds, val=0.15, test=0.15, seed=0)
    check_partition(ds, s)
    for part in (s.train, s.val, s.test):
        assert all(n >= 1 for n in part.class_counts().values())
    assert s.test.class_counts() == {"c0": 15, "c1": 6, "c2": 1}
    assert s.val.class_counts() == {"c0": 15, "c1": 6, "c2": 1}
    assert s.train.class_counts() == {"c0": 70, "c1": 28, "c2": 1}
    assert s.seed == 0 and s.test.name == ds.name


def test_deterministic_for_a_seed_and_different_for_another() -> None:
    ds = labelled([30, 30])
    a, b, c = (stratified_split(ds, seed=s) for s in (5, 5, 6))
    assert a.test.content_hash == b.test.content_hash
    assert a.train.content_hash == b.train.content_hash
    assert ids(a.test) != ids(c.test)


def test_zero_fraction_gives_an_empty_part() -> None:
    s = stratified_split(labelled([10, 2]), val=0.0, test=0.2)
    assert len(s.val) == 0 and s.test.class_counts() == {"c0": 2, "c1": 1}


def test_too_small_class_is_named() -> None:
    ds = labelled([10, 2])
    with pytest.raises(DataError) as err:
        stratified_split(ds)
    assert "'c1'" in err.value.message and "2 sample" in err.value.message
    assert err.value.hint


@pytest.mark.parametrize(
    ("val", "test"), [(0.5, 0.5), (-0.1, 0.2), (0.2, 1.0), (float("nan"), 0.1)]
)
def test_bad_fractions_are_config_errors(val: float, test: float) -> None:
    with pytest.raises(ConfigError) as err:
        stratified_split(labelled([10, 10]), val=val, test=test)
    assert f"val={val}" in err.value.message


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.integers(min_value=3, max_value=40), min_size=1, max_size=5),
    val=st.floats(min_value=0.0, max_value=0.45),
    test=st.floats(min_value=0.01, max_value=0.45),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_parts_always_partition_the_data(
    counts: list[int], val: float, test: float, seed: int
) -> None:
    ds = labelled(counts)
    s = stratified_split(ds, val=val, test=test, seed=seed)
    check_partition(ds, s)
    assert all(n >= 1 for n in s.train.class_counts().values())
    assert all(n >= 1 for n in s.test.class_counts().values())


@settings(max_examples=60, deadline=None)
@given(
    data=st.lists(st.floats(-1e3, 1e3, width=32), min_size=2, max_size=30),
    index=st.integers(min_value=0),
    delta=st.floats(0.5, 10.0, width=32),
)
def test_changing_one_value_changes_the_hash(data: list[float], index: int, delta: float) -> None:
    x = np.asarray(data, dtype=np.float32).reshape(-1, 1)
    ds = Dataset("h", x, np.zeros(len(x), np.int64), ("a",), Modality.TABULAR)
    changed = x.copy()
    changed[index % len(x), 0] += delta
    assert ds.content_hash != ds.with_arrays(changed, ds.y).content_hash
    assert ds.content_hash == ds.with_arrays(x.copy(), ds.y).content_hash
