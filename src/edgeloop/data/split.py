"""Stratified train / validation / test split in plain numpy.

Each class is shuffled with one seeded generator and cut by the fractions, so every class
with enough samples appears in every part in about its overall proportion, and the same seed
gives the same split on any machine (numpy's PCG64 stream is stable across platforms).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from edgeloop.core.errors import ConfigError, DataError
from edgeloop.data.dataset import Dataset, Splits


def _share(n: int, fraction: float) -> int:
    """Samples of a class of ``n`` that go to a part: rounded half up, at least one."""
    return 0 if fraction == 0 else max(1, math.floor(n * fraction + 0.5))


def _check_fractions(val: float, test: float) -> None:
    ok = all(math.isfinite(f) and 0 <= f < 1 for f in (val, test)) and val + test < 1
    if not ok:
        raise ConfigError(
            f"val={val}, test={test}: each must be in [0, 1) and val + test below 1",
            hint="e.g. val=0.15, test=0.15 leaves 70 % for training",
        )


def _cut(n: int, val: float, test: float) -> tuple[int, int]:
    """(n_val, n_test) for a class of ``n`` samples, leaving at least one for training."""
    n_val, n_test = _share(n, val), _share(n, test)
    while n_val + n_test > n - 1:
        if n_val >= n_test:
            n_val -= 1
        else:
            n_test -= 1
    return n_val, n_test


def stratified_split(ds: Dataset, val: float = 0.15, test: float = 0.15, seed: int = 0) -> Splits:
    """Split ``ds`` into train / val / test, stratified by label; deterministic for a seed.

    A part with fraction 0 is empty. Every class needs one sample per non-empty part.

    Raises:
        ConfigError: fractions outside [0, 1) or summing to 1 or more.
        DataError: a class has fewer samples than non-empty parts (the message names it).
    """
    _check_fractions(val, test)
    needed = 1 + (val > 0) + (test > 0)
    rng = np.random.default_rng(seed)
    parts: tuple[list[npt.NDArray[np.int64]], ...] = ([], [], [])
    for label, name in enumerate(ds.classes):
        index = np.flatnonzero(ds.y == label).astype(np.int64)
        if len(index) == 0:
            continue
        if len(index) < needed:
            raise DataError(
                f"class {name!r} of {ds.name!r} has {len(index)} sample(s); a split into "
                f"{needed} parts needs at least {needed} per class",
                hint="collect more samples of that class, or set val / test to 0",
            )
        index = rng.permutation(index)
        n_val, n_test = _cut(len(index), val, test)
        parts[0].append(index[n_val + n_test :])
        parts[1].append(index[:n_val])
        parts[2].append(index[n_val : n_val + n_test])
    train, valid, held_out = (
        np.sort(np.concatenate(p)) if p else np.arange(0, dtype=np.int64) for p in parts
    )
    return Splits(train=ds.subset(train), val=ds.subset(valid), test=ds.subset(held_out), seed=seed)
