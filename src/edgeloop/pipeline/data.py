"""The data stages: load a data set, clean it, split it (train / validation / test).

Each takes the data it works on explicitly, so a retraining job can feed another data set (a
path, a capture from the fleet) through the same steps the quickstart uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeloop.data.clean import CleaningReport
from edgeloop.data.dataset import Dataset, Splits


@dataclass(frozen=True, slots=True)
class Loaded:
    """The data set as read, before cleaning."""

    dataset: Dataset

    def to_dict(self) -> dict[str, Any]:
        ds = self.dataset
        return {"dataset": {"name": ds.name, "source": ds.source, "loaded_samples": len(ds)}}


@dataclass(frozen=True, slots=True)
class Cleaned:
    """The clean data set and what cleaning changed."""

    dataset: Dataset
    report: CleaningReport

    def to_dict(self) -> dict[str, Any]:
        ds = self.dataset
        return {
            "clean": self.report.to_dict(),
            "dataset": {
                "hash": ds.content_hash,
                "samples": len(ds),
                "sample_shape": list(ds.sample_shape),
                "classes": len(ds.classes),
            },
        }


@dataclass(frozen=True, slots=True)
class Split:
    """The stratified split every later stage trains, calibrates and measures on."""

    splits: Splits

    @property
    def test_name(self) -> str:
        """How reports name the held-out split: its data set and size."""
        test = self.splits.test
        return f"{test.name} test ({len(test)} samples)"

    def to_dict(self) -> dict[str, Any]:
        s = self.splits
        return {
            "dataset": {"split": {"train": len(s.train), "val": len(s.val), "test": len(s.test)}}
        }


def load(source: str | Path) -> Loaded:
    """A bundled data set by short name, or user data by path.

    Raises:
        NotFoundError, ConfigError, DataError: from :func:`edgeloop.data.load_data`.
    """
    from edgeloop.data import load_data

    return Loaded(load_data(source))


def clean(dataset: Dataset) -> Cleaned:
    """Drop duplicates, clip gross outliers, impute missing values (the library defaults).

    Raises:
        DataError: a feature with no finite value at all.
    """
    from edgeloop.data import clean as clean_data

    out, report = clean_data(dataset)
    return Cleaned(out, report)


def split(dataset: Dataset, *, seed: int, val: float = 0.15, test: float = 0.15) -> Split:
    """Stratified train / validation / test split with ``seed``.

    Raises:
        ConfigError, DataError: fractions out of range, or too few samples per class.
    """
    from edgeloop.data import stratified_split

    return Split(stratified_split(dataset, val=val, test=test, seed=seed))
