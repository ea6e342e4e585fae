"""The retraining job's data: the parent's own data set and split, plus recent labelled samples.

The parent's data is found again from its manifest (the data it names, loaded and cleaned as
its recipe says, split with its split seed) and checked against the content hash it records, so
"the original test split" is the very split the parent was measured on, or the job stops. The
recent sets are stored data set versions; each one's labelled samples are split per class into
train / validation / hold-out, the hold-out never trained on. What went into the mix is
recorded (:meth:`Assembled.mix`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from edgeloop.core.errors import ConfigError, DataError
from edgeloop.core.types import Manifest
from edgeloop.data.dataset import Dataset, Splits
from edgeloop.registry.dataset_library import DatasetLibrary
from edgeloop.registry.datasets import DatasetRef

VAL = 0.15  # the share every split here keeps for early stopping (as `edgeloop train` does)
TEST = 0.15
RECENT_SHARE = 0.25  # recent samples' share of the training mix that recent_repeat=0 aims at
MAX_REPEAT = 10


@dataclass(frozen=True, slots=True)
class Recent:
    """One recent data set version: its labelled samples and how they were split."""

    ref: DatasetRef
    samples: int
    labelled: Dataset
    train: npt.NDArray[np.int64]
    val: npt.NDArray[np.int64]
    holdout: npt.NDArray[np.int64]

    def to_dict(self) -> dict[str, Any]:
        return {
            "ref": str(self.ref),
            "samples": self.samples,
            "labelled": len(self.labelled),
            "train": len(self.train),
            "val": len(self.val),
            "holdout": len(self.holdout),
            "classes": {k: v for k, v in self.labelled.class_counts().items() if v},
        }


@dataclass(frozen=True)
class Assembled:
    """The training mix (train / val, original test), the recent hold-out, and the record."""

    parent_source: str
    parent: Splits
    recent: tuple[Recent, ...]
    repeat: int
    mix: Splits
    holdout: Dataset

    @property
    def original_test(self) -> Dataset:
        return self.parent.test

    def to_dict(self) -> dict[str, Any]:
        """The mix as recorded in the job's result and the new version's lineage."""
        recent_train = sum(len(r.train) for r in self.recent) * self.repeat
        return {
            "parent_data": {
                "source": self.parent_source,
                "content_hash": self.parent.train.content_hash,
                "split_seed": self.parent.seed,
                "train": len(self.parent.train),
                "val": len(self.parent.val),
                "test": len(self.parent.test),
            },
            "recent": [r.to_dict() for r in self.recent],
            "recent_repeat": self.repeat,
            "train_samples": len(self.mix.train),
            "recent_share_of_train": round(recent_train / max(1, len(self.mix.train)), 4),
            "val_samples": len(self.mix.val),
            "holdout_samples": len(self.holdout),
            "original_test_samples": len(self.parent.test),
        }


def parent_splits(manifest: Manifest, library: DatasetLibrary) -> tuple[str, Splits]:
    """The data ``manifest`` was trained on, cleaned as recorded and split with its seed.

    Raises:
        ConfigError: the manifest names no data, or the data no longer hashes to the recorded
            ``source_data_hash`` (then the original test split cannot be rebuilt).
        NotFoundError, DataError: from loading the data.
    """
    from edgeloop.data import LoadOptions, clean, load_data, stratified_split

    recipe = dict(manifest.recipe)
    found = recipe.get("data")
    data: dict[str, Any] = found if isinstance(found, dict) else {}
    source = str(data.get("spec") or manifest.dataset or "")
    if not source:
        raise ConfigError(
            f"{manifest.name}'s manifest names no training data, so its original test split "
            "cannot be rebuilt",
            hint="publish the parent with --checkpoint (it records the data), or retrain a "
            "version the quickstart or a retraining job registered",
        )
    if _is_stored(source, library):
        ds = library.samples(source).labelled_dataset(source)
    else:
        options = data.get("options")
        ds = load_data(source, LoadOptions.from_dict(options) if options else None)
        if data.get("clean", "spec" not in data):  # the quickstart cleans; `train` records it
            ds = clean(ds)[0]
    want = manifest.source_data_hash
    if want is not None and ds.content_hash != want:
        raise ConfigError(
            f"the data {source!r} now hashes to {ds.content_hash[:12]}..., but "
            f"{manifest.name} was trained on {want[:12]}...: its original test split cannot "
            "be rebuilt to compare on",
            hint="retrain from the data set the parent was trained on (restore that file)",
        )
    seed = int(recipe.get("split_seed", (recipe.get("fit") or {}).get("seed", 0)))
    return source, stratified_split(ds, val=VAL, test=TEST, seed=seed)


def _is_stored(source: str, library: DatasetLibrary) -> bool:
    try:
        ref = DatasetRef.parse(source)
    except ConfigError:
        return False
    return ref.version is not None and any(v.ref == ref for v in library.list(ref.name))


def recent_sets(
    refs: tuple[DatasetRef, ...],
    library: DatasetLibrary,
    like: Dataset,
    *,
    holdout: float,
    seed: int,
) -> tuple[Recent, ...]:
    """Each ref's labelled samples, checked against the parent's classes and sample shape,
    split per class (the hold-out gets ``holdout`` of each class that has two samples or more).

    Raises:
        NotFoundError: a ref names no stored version.
        DataError: a set without labelled samples, or labelled with one class only.
        ConfigError: classes or sample shape differ from the parent's.
    """
    out = []
    for ref in refs:
        version = library.get(ref)
        ds = library.samples(version.ref).labelled_dataset(str(version.ref))
        check_recent(ds, version.entry.samples, like)
        train, val, hold = split_recent(ds.y, holdout, seed)
        out.append(Recent(version.ref, version.entry.samples, ds, train, val, hold))
    return tuple(out)


def check_recent(ds: Dataset, samples: int, like: Dataset) -> None:
    """Refuse a recent set that cannot teach or judge anything (see :func:`recent_sets`)."""
    check_labelled(ds, samples)
    if ds.classes != like.classes:
        raise ConfigError(
            f"data set {ds.name} has classes {list(ds.classes)}; the model has "
            f"{list(like.classes)}",
            hint="retrain on samples captured from this model (same classes, same order)",
        )
    if ds.sample_shape != like.sample_shape:
        raise ConfigError(
            f"data set {ds.name} holds samples of shape {ds.sample_shape}; the model takes "
            f"{like.sample_shape}",
            hint="retrain on samples captured from this model's input",
        )


def check_labelled(ds: Dataset, samples: int) -> None:
    """Refuse a set without labelled samples, or labelled with one class only."""
    if not len(ds):
        raise DataError(
            f"data set {ds.name} has no labelled sample ({samples} unlabelled): there is nothing "
            "to retrain on or to judge the challenger with",
            hint=f"label it first: `edgeloop data label export {ds.name} --out tasks.json`, "
            "then `edgeloop data label import`",
        )
    present = [c for c, n in ds.class_counts().items() if n]
    if len(present) < 2:
        raise DataError(
            f"data set {ds.name} is labelled with one class only ({present[0]!r}, "
            f"{len(ds)} samples): a challenger judged on it is judged on one class, and "
            "trained on it learns to answer that class",
            hint="label samples of at least two classes, or add another data set with --data",
        )


def split_recent(
    y: npt.NDArray[np.int64], holdout: float, seed: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Row indices (train, val, hold-out), per class: a class of n >= 2 samples gives
    max(1, round(n * holdout)) to the hold-out, one of n >= 4 also round(n * VAL) to
    validation; a class of one sample is trained on. Deterministic for a seed."""
    rng = np.random.default_rng(seed)
    parts: tuple[list[int], list[int], list[int]] = ([], [], [])
    for label in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == label))
        n = len(rows)
        n_hold = max(1, round(n * holdout)) if n >= 2 else 0
        n_val = round(n * VAL) if n >= 4 else 0
        parts[2].extend(rows[:n_hold].tolist())
        parts[1].extend(rows[n_hold : n_hold + n_val].tolist())
        parts[0].extend(rows[n_hold + n_val :].tolist())
    train, val, hold = (np.sort(np.asarray(p, dtype=np.int64)) for p in parts)
    return train, val, hold


def assemble(
    source: str, parent: Splits, recent: tuple[Recent, ...], *, repeat: int, name: str
) -> Assembled:
    """The mix: the parent's train (val) split plus each recent train (val) part, the recent
    train part repeated ``repeat`` times (0: so it is about RECENT_SHARE of the train mix)."""
    n_recent = sum(len(r.train) for r in recent)
    if repeat == 0:
        want = RECENT_SHARE / (1 - RECENT_SHARE) * len(parent.train)
        repeat = min(MAX_REPEAT, max(1, round(want / max(1, n_recent))))
    train = _concat(
        name, parent.train, [r.labelled.subset(r.train) for r in recent for _ in range(repeat)]
    )
    val = _concat(name, parent.val, [r.labelled.subset(r.val) for r in recent])
    hold = _concat(f"{name}-holdout", None, [r.labelled.subset(r.holdout) for r in recent])
    mix = Splits(train=train, val=val, test=parent.test, seed=parent.seed)
    return Assembled(source, parent, recent, repeat, mix, hold)


def _concat(name: str, first: Dataset | None, rest: list[Dataset]) -> Dataset:
    parts = ([first] if first is not None else []) + rest
    base = parts[0]
    return Dataset(
        name=name,
        x=np.concatenate([p.x for p in parts]).astype(np.float32),
        y=np.concatenate([p.y for p in parts]).astype(np.int64),
        classes=base.classes,
        modality=base.modality,
        task=base.task,
        source=" + ".join(p.name for p in parts),
    )
