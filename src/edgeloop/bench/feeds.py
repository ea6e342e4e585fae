"""The inputs a benchmark feeds the model: real samples from a data set, or synthetic ones.

With a data set, batches are taken from it in order, cycling when the runs outnumber the
samples. Without one, each input gets a fixed tensor of its declared shape (the free batch axis
set to the batch size) drawn once from a seeded generator: the seed fixes the *input*, so two
runs time the same work; it never produces a reported figure.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from edgeloop.core.errors import ConfigError
from edgeloop.core.types import TensorSpec, shape_str
from edgeloop.data.dataset import Dataset

INPUT_SEED = 0  # seeds synthetic *inputs* only
# Samples per run of the accuracy pass when the batch axis is free: few runs, bounded memory.
SCORING_BATCH = 64

Batch = dict[str, npt.NDArray[Any]]


@dataclass(frozen=True)
class Feeds:
    """Builds the batch for run ``index``; ``shapes`` and ``description`` go in the report."""

    model: str
    batch_size: int
    description: str
    shapes: tuple[str, ...]
    name: str = ""
    fixed_batch: bool = False
    x: npt.NDArray[Any] | None = None
    synthetic: Batch = field(default_factory=dict)

    def batch(self, index: int) -> Batch:
        """The inputs of run ``index`` (the same tensors every run when synthetic)."""
        if self.x is None:
            return self.synthetic
        rows = (index * self.batch_size + np.arange(self.batch_size)) % len(self.x)
        return {self.name: self.x.take(rows, axis=0)}

    def full_pass(self) -> Iterator[tuple[Batch, int]]:
        """Every data sample once, in order, as (batch, number of real samples in it).

        A fixed batch axis gets its last batch padded with the first samples; the caller keeps
        only the first ``count`` outputs.
        """
        if self.x is None:
            raise ConfigError("a full pass over the data needs a data set; none was given")
        size = self.batch_size if self.fixed_batch else max(self.batch_size, SCORING_BATCH)
        for start in range(0, len(self.x), size):
            chunk = self.x[start : start + size]
            count = len(chunk)
            if self.fixed_batch and count < size:
                chunk = self.x.take(np.arange(start, start + size) % len(self.x), axis=0)
            yield {self.name: chunk}, count


def _dtype(spec: TensorSpec) -> np.dtype[Any]:
    return np.dtype(spec.dtype)


def _batch_axis(spec: TensorSpec, batch_size: int, model: str) -> bool:
    """Check the first axis can take ``batch_size``; True when it is fixed (not free)."""
    if not spec.shape:
        raise ConfigError(
            f"{model}: input {spec.name!r} is a scalar (no batch axis); cannot batch it",
            hint="benchmark a model whose inputs have a leading batch axis",
        )
    first = spec.shape[0]
    if first is not None and first != batch_size:
        raise ConfigError(
            f"{model}: input {spec.name!r} has shape {shape_str(spec.shape)} with a fixed batch "
            f"axis of {first}; batch size {batch_size} does not fit",
            hint=f"use --batch-size {first}, or export the model with a free (dynamic) batch axis",
        )
    return first is not None


def _synthetic(specs: tuple[TensorSpec, ...], batch_size: int, model: str) -> Feeds:
    rng = np.random.default_rng(INPUT_SEED)
    batch: Batch = {}
    for spec in specs:
        _batch_axis(spec, batch_size, model)
        free = [i for i, d in enumerate(spec.shape[1:], start=1) if d is None]
        if free:
            raise ConfigError(
                f"{model}: input {spec.name!r} has shape {shape_str(spec.shape)}; axes {free} "
                "besides the batch axis are free, so synthetic input cannot choose their size",
                hint="pass --data with real samples of the shape the model expects",
            )
        shape = (batch_size, *(int(d) for d in spec.shape[1:] if d is not None))
        dtype = _dtype(spec)
        if np.issubdtype(dtype, np.floating):
            batch[spec.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype == np.bool_:
            batch[spec.name] = rng.random(shape) < 0.5
        else:  # integer inputs are usually ids / indices: keep them small and non-negative
            batch[spec.name] = rng.integers(0, 10, size=shape).astype(dtype)
    kinds = ", ".join(sorted({s.dtype for s in specs}))
    return Feeds(
        model=model,
        batch_size=batch_size,
        description=f"synthetic ({kinds}; standard normal floats, seed {INPUT_SEED})",
        shapes=tuple(f"{k}: {shape_str(v.shape)}" for k, v in batch.items()),
        synthetic=batch,
    )


def _from_data(spec: TensorSpec, batch_size: int, data: Dataset, model: str) -> Feeds:
    fixed = _batch_axis(spec, batch_size, model)
    expected = spec.shape[1:]
    got = data.sample_shape
    if len(expected) != len(got) or any(
        e is not None and e != g for e, g in zip(expected, got, strict=True)
    ):
        raise ConfigError(
            f"data set {data.name!r} has samples of shape {shape_str(got)}, but model {model} "
            f"input {spec.name!r} expects {shape_str(spec.shape)} (batch axis first)",
            hint="pass data shaped like the model input, or the model trained on this data",
        )
    if len(data) == 0:
        raise ConfigError(f"data set {data.name!r} is empty; it cannot feed a benchmark")
    return Feeds(
        model=model,
        batch_size=batch_size,
        description=f"{data.name} ({len(data)} samples, cycled in order)",
        shapes=(f"{spec.name}: {shape_str((batch_size, *got))}",),
        name=spec.name,
        fixed_batch=fixed,
        x=np.ascontiguousarray(data.x, dtype=_dtype(spec)),
    )


def plan_feeds(
    specs: tuple[TensorSpec, ...], batch_size: int, data: Dataset | None, model: str
) -> Feeds:
    """Inputs for ``model`` (named in messages) at ``batch_size``.

    Raises:
        ConfigError: a fixed batch axis other than ``batch_size``; free non-batch axes without
            data; data whose sample shape does not match; data for a multi-input model.
    """
    if data is None:
        return _synthetic(specs, batch_size, model)
    if len(specs) != 1:
        raise ConfigError(
            f"model {model} has {len(specs)} inputs ({', '.join(s.name for s in specs)}); "
            "a data set feeds exactly one",
            hint="benchmark it without --data (synthetic inputs)",
        )
    return _from_data(specs[0], batch_size, data, model)
