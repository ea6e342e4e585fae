"""The reference profile of a model version: made at registration, checked, stored beside it.

A profile (:mod:`edgeloop.monitoring`) summarises the training inputs, and the model's outputs
on held-out rows, so a node can monitor drift without holding training data. It is made here
from the training split (inputs) and the validation split, the model run on it with
onnxruntime (class probabilities, confidences) and its true labels; it is refused when its
sample shape is not the model's input shape.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from edgeloop.core.errors import ConfigError, DataError, EdgeError
from edgeloop.core.types import Manifest, ProfileRecord, shape_str

if TYPE_CHECKING:
    from edgeloop.data.dataset import Dataset, Splits
    from edgeloop.monitoring import ReferenceProfile

# The profile's size does not grow with the reference (see docs/monitoring.md); its build time
# and the model run over it do, so a huge training split is subsampled (seeded) to this many.
MAX_REFERENCE_ROWS = 20_000
# The split each part of a registration profile is computed on (its ``source``).
TRAIN, HELD_OUT = "train", "val"
FILE_SUFFIX = ".profile.npz"


def profile_model(
    model_file: Path,
    x: npt.ArrayLike,
    labels: npt.ArrayLike | None = None,
    *,
    held_out: tuple[npt.ArrayLike, npt.ArrayLike | None] | None = None,
    seed: int = 0,
) -> bytes:
    """The profile bytes of reference ``x`` (the training inputs) for the ONNX ``model_file``.

    The model's outputs are profiled too when they are class probabilities (rows of ``>= 2``
    shares summing to 1), with their labels for the accuracy estimate: on the ``held_out``
    rows and labels (the validation split; on its training rows a model is over-confident),
    else on ``x``. The profile names the split of each part (``source``: ``"train"`` or
    ``"val"``). An output that is a score (the autoencoder) leaves the profile on inputs alone.

    Raises:
        DataError: a reference the monitor refuses (NaN/inf, one row, constant features).
        ConfigError: the model cannot be run on ``x``.
    """
    from edgeloop.monitoring import build_profile
    from edgeloop.monitoring.profile import build_output_profile

    rows, y = _subsample(x, labels, seed)
    profile = dataclasses.replace(build_profile(rows), source=TRAIN)
    parts = [(rows, y, TRAIN)]
    if held_out is not None:
        held_rows, held_y = _subsample(*held_out, seed)
        if held_rows.shape[0] >= 2:  # else (no validation split) the outputs on train's rows
            parts.insert(0, (held_rows, held_y, HELD_OUT))
    for out_rows, out_y, source in parts:
        outputs = _probabilities(model_file, out_rows)
        if outputs is None:
            return profile.to_bytes()
        try:
            made = build_output_profile(outputs, out_y)
        except DataError:  # held-out rows too few to profile (one predicted class): train's
            if source == TRAIN:
                raise
            continue
        made = dataclasses.replace(made, source=source)
        return dataclasses.replace(profile, outputs=made).to_bytes()
    raise AssertionError("unreachable: the training rows either profile or raise")


def profile_dataset(
    model_file: Path, train: Dataset, held_out: Dataset | None = None, *, seed: int = 0
) -> bytes:
    """:func:`profile_model` on a training split, the outputs on ``held_out`` (the validation
    split) when given (labels only for a classifier's splits)."""
    from edgeloop.data.dataset import Task

    def labelled(part: Dataset) -> tuple[npt.ArrayLike, npt.ArrayLike | None]:
        return part.x, part.y if part.task == Task.CLASSIFICATION else None

    rest = None if held_out is None else labelled(held_out)
    return profile_model(model_file, *labelled(train), held_out=rest, seed=seed)


def _subsample(
    x: npt.ArrayLike, labels: npt.ArrayLike | None, seed: int
) -> tuple[npt.NDArray[np.float32], npt.NDArray[Any] | None]:
    """``x`` as float32 and its labels, a seeded subsample of :data:`MAX_REFERENCE_ROWS`."""
    rows = np.asarray(x, dtype=np.float32)
    y = None if labels is None else np.asarray(labels)
    if rows.shape[0] > MAX_REFERENCE_ROWS:
        pick = np.sort(
            np.random.default_rng(seed).choice(rows.shape[0], MAX_REFERENCE_ROWS, replace=False)
        )
        rows, y = rows[pick], None if y is None else y[pick]
    return rows, y


def check_profile(data: bytes, manifest: Manifest) -> ProfileRecord:
    """The record of profile ``data`` for ``manifest``, after checking it fits the model.

    Raises:
        DataError: ``data`` is not a profile this edgeloop reads.
        ConfigError: its sample shape is not the shape of the model's first input.
    """
    from edgeloop.monitoring import ReferenceProfile

    profile = ReferenceProfile.from_bytes(data)
    _check_shape(profile, manifest)
    return ProfileRecord(
        sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        format_version=profile.version,
        rows=profile.n,
        dataset=manifest.dataset,
    )


def _check_shape(profile: ReferenceProfile, manifest: Manifest) -> None:
    spec = manifest.inputs[0]
    sample = tuple(spec.shape[1:])  # the first axis is the batch
    have = profile.sample_shape
    fits = len(sample) == len(have) and all(
        d is None or d == h for d, h in zip(sample, have, strict=True)
    )
    if not fits:
        raise ConfigError(
            f"the profile's samples have shape {shape_str(have)}, but {manifest.name!r} takes "
            f"input {spec.name!r} of shape {shape_str(spec.shape)} (samples "
            f"{shape_str(sample)})",
            hint="profile the data the model was trained on (registry publish --checkpoint DIR)",
        )


def splits_of_checkpoint(folder: Path) -> Splits:
    """The splits of the data ``edgeloop train`` recorded in checkpoint ``folder`` (its
    training split is the profile's input reference, its validation split the outputs'):
    read with the same loader options, cleaned if it was, split with the same seed.

    Raises:
        ConfigError: the checkpoint records no data that can be loaded again.
        EdgeError: from loading the data.
    """
    from edgeloop.data import LoadOptions, clean, load_data, stratified_split
    from edgeloop.data.bundled import bundled_names
    from edgeloop.training.checkpoint import read_checkpoint, recorded_data

    info = read_checkpoint(folder)
    recorded = recorded_data(folder)
    if recorded is not None:
        dataset = load_data(recorded.spec, LoadOptions.from_dict(recorded.options))
        if recorded.cleaned:
            dataset = clean(dataset)[0]
    elif info.dataset in bundled_names():
        dataset = load_data(str(info.dataset), LoadOptions())
    else:
        raise ConfigError(
            f"checkpoint {str(folder)!r} does not record where its training data is "
            f"(data set name: {info.dataset or 'none'}), so no reference profile can be made",
            hint="train with `edgeloop train --data D --out DIR`, which records it",
        )
    seed = 0 if info.fit is None else info.fit.seed
    return stratified_split(dataset, val=0.15, test=0.15, seed=seed)


def _probabilities(model_file: Path, x: npt.NDArray[np.float32]) -> npt.NDArray[Any] | None:
    """The model's first output on ``x`` when it is class probabilities, else None."""
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        parts = [session.run(None, {name: x[i : i + 1024]})[0] for i in range(0, len(x), 1024)]
    except EdgeError:
        raise
    except Exception as exc:  # onnxruntime's own errors: translated at the boundary
        raise ConfigError(
            f"could not run {str(model_file)!r} on the reference of shape {x.shape}: {exc}",
            hint="profile the data the model was trained on",
        ) from exc
    from edgeloop.monitoring.outputs import distributions

    out = np.concatenate(parts).astype(np.float64)
    if out.ndim != 2 or out.shape[1] < 2 or out.shape[0] != x.shape[0]:
        return None
    probs, ok = distributions(out)  # a static-int8 model's quantized softmax, renormalised
    return probs if ok.all() else None
