"""A tiny real champion and shifted, labelled recent data for the retraining tests.

The champion is a small MLP trained for a few epochs on the cleaned digits set (split seed 0)
and registered as the quickstart registers its model (manifest with data hash, recipe, split
seed). The recent data are digits samples with a brightness/contrast shift (``0.5 + 0.5 x``),
stored as a labelled data set version in the same registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeloop.core.settings import Settings
from edgeloop.core.types import ModelRef
from edgeloop.data.dataset import Dataset
from edgeloop.data.samples import UNLABELLED, SampleSet
from edgeloop.registry.dataset_library import DatasetLibrary
from edgeloop.registry.datasets import DatasetRef, Provenance

MODEL = "digits-mlp"


@dataclass(frozen=True)
class Champion:
    settings: Settings
    ref: ModelRef
    checkpoint: Path
    shifted: DatasetRef
    clean: Dataset


def shift(x: np.ndarray) -> np.ndarray:
    """The injected shift: brighter and lower contrast, as a camera with a changed exposure."""
    return (0.5 + 0.5 * x).astype(np.float32)


def make_champion(home: Path, epochs: int = 3) -> Champion:
    from edgeloop.pipeline.data import clean, load, split
    from edgeloop.pipeline.export import export
    from edgeloop.pipeline.register import model_manifest, register
    from edgeloop.pipeline.train import train

    settings = Settings.load(home)
    ds = clean(load("digits").dataset).dataset
    splits = split(ds, seed=0).splits
    trained = train(splits, ds, "mlp", home / "ck", epochs=epochs, seed=0, progress=False)
    onnx = export(
        trained.result.module, trained.result.arch, splits.test.x, home / "m.onnx", split="test"
    )
    manifest = model_manifest(MODEL, onnx.result, trained.result, ds, (), split_seed=0)
    ref = register(onnx.onnx, manifest, settings).ref
    rows = np.random.default_rng(1).choice(len(ds), 300, replace=False)
    recent = store_samples(settings, "shifted", ds.subset(rows), shift(ds.x[rows]))
    return Champion(settings, ref, trained.checkpoint, recent, ds)


def store_samples(
    settings: Settings,
    name: str,
    ds: Dataset,
    x: np.ndarray,
    labels: np.ndarray | None = None,
) -> DatasetRef:
    """Store ``x`` with ``labels`` (default: ``ds.y``; UNLABELLED entries stay unlabelled)."""
    y = ds.y if labels is None else labels
    samples = SampleSet(
        x.astype(np.float32),
        y.astype(np.int64),
        tuple(f"req-{i}" for i in range(len(x))),
        ds.classes,
        ds.modality,
    )
    with DatasetLibrary.open(settings) as library:
        v = library.add(name, samples, Provenance(model=MODEL, reasons=("test",)))
    return v.ref


def unlabelled(n: int) -> np.ndarray:
    return np.full(n, UNLABELLED, np.int64)
