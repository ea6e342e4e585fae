"""Cleaning that says what it did: drop exact duplicates, clip gross outliers, impute gaps.

Steps run in this order, each on the output of the one before:

1. **Duplicates**: samples with byte-identical features *and* label are dropped, the first
   kept. Samples with identical features but different labels are counted as label conflicts
   and kept: which label is right is the user's call, not ours.
2. **Outliers**: values farther than ``clip_z`` robust standard deviations from the median are
   clipped to that bound (a modified z-score: sigma = 1.4826 * MAD; Iglewicz & Hoaglin, "How
   to Detect and Handle Outliers", ASQC 1993). Statistics are per column for tabular data and
   per channel (pooled over time / pixels) for signals and images, because one channel shares
   one physical scale. A group whose MAD is 0 (mostly constant) has no scale and is left alone.
3. **Missing values**: NaN and +-inf are replaced per feature position by the median (default),
   mean or zero of the finite values at that position.

Why the default ``clip_z`` is high: real sensor data is heavy-tailed. Measured on the bundled
sets, the largest robust z is 10.1 for ``digits`` (pooled pixels), 43.1 for ``basic-motions``
(gyroscope channel 3, badminton swings against a resting median) and 19.0 for the ECG of
``mitdb-anomaly`` (R peaks). Clipping at Iglewicz & Hoaglin's 3.5 would erase exactly the
signal a model needs, so the default only removes gross errors (sentinels such as -9999,
unit mix-ups, bit flips), which sit hundreds or thousands of robust sigmas out. Pass a lower
``clip_z`` for tabular data whose columns are known to be light-tailed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

from edgeloop.core.errors import ConfigError, DataError
from edgeloop.data.dataset import Dataset, Modality
from edgeloop.data.windows import MAD_TO_SIGMA

DEFAULT_CLIP_Z = 50.0


class Imputation(StrEnum):
    """The statistic that replaces a missing value, taken per feature position."""

    MEDIAN = "median"
    MEAN = "mean"
    ZERO = "zero"


class ClipScope(StrEnum):
    """Which values share one median / MAD when clipping."""

    COLUMN = "column"
    CHANNEL = "channel"


@dataclass(frozen=True, slots=True)
class CleaningReport:
    """What :func:`clean` did, counted on the data it was given."""

    samples_in: int
    samples_out: int
    duplicates_dropped: int
    label_conflicts: int
    missing_values: int
    samples_with_missing: int
    imputation: Imputation
    clip_z: float | None
    clip_scope: ClipScope
    clipped_values: int
    samples_clipped: int
    groups_without_spread: int
    input_hash: str
    output_hash: str

    def __post_init__(self) -> None:
        if self.samples_out != self.samples_in - self.duplicates_dropped:
            raise DataError(
                f"cleaning report: {self.samples_in} in - {self.duplicates_dropped} duplicates "
                f"!= {self.samples_out} out"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "samples_in": self.samples_in,
            "samples_out": self.samples_out,
            "duplicates_dropped": self.duplicates_dropped,
            "label_conflicts": self.label_conflicts,
            "missing_values": self.missing_values,
            "samples_with_missing": self.samples_with_missing,
            "imputation": self.imputation.value,
            "clip_z": self.clip_z,
            "clip_scope": self.clip_scope.value,
            "clipped_values": self.clipped_values,
            "samples_clipped": self.samples_clipped,
            "groups_without_spread": self.groups_without_spread,
            "input_hash": self.input_hash,
            "output_hash": self.output_hash,
        }


def clean(
    ds: Dataset, *, impute: Imputation | str = "median", clip_z: float | None = DEFAULT_CLIP_Z
) -> tuple[Dataset, CleaningReport]:
    """Drop duplicates, clip outliers beyond ``clip_z`` robust sigmas (None: no clipping),
    impute missing values; return the clean data set and the counts.

    Raises:
        ConfigError: an unknown ``impute`` or a ``clip_z`` that is not a positive number.
        DataError: a feature position with no finite value at all (nothing to impute from).
    """
    method = _imputation(impute)
    if clip_z is not None and not (math.isfinite(clip_z) and clip_z > 0):
        raise ConfigError(
            f"clip_z={clip_z} is not valid; expected a positive number of robust sigmas or None",
            hint=f"the default {DEFAULT_CLIP_Z} clips only gross errors",
        )
    x_in = np.asarray(ds.x, dtype=np.float32)
    keep, conflicts = _deduplicate(x_in, ds.y)
    x = x_in[keep].copy()
    missing = ~np.isfinite(x)
    x[missing] = np.nan  # +-inf is a missing value, not an outlier: clip statistics skip it
    _check_imputable(missing)
    scope = ClipScope.COLUMN if ds.modality is Modality.TABULAR else ClipScope.CHANNEL
    clipped, flat_groups = (
        _clip(x, scope, clip_z) if clip_z is not None and len(x) else (np.zeros_like(missing), 0)
    )
    _impute(x, missing, method)
    out = ds.with_arrays(x, ds.y[keep])
    report = CleaningReport(
        samples_in=len(ds),
        samples_out=len(out),
        duplicates_dropped=len(ds) - len(out),
        label_conflicts=conflicts,
        missing_values=int(missing.sum()),
        samples_with_missing=_samples_with(missing),
        imputation=method,
        clip_z=clip_z,
        clip_scope=scope,
        clipped_values=int(clipped.sum()),
        samples_clipped=_samples_with(clipped),
        groups_without_spread=flat_groups,
        input_hash=ds.content_hash,
        output_hash=out.content_hash,
    )
    return out, report


def _imputation(value: Imputation | str) -> Imputation:
    try:
        return Imputation(value)
    except ValueError as exc:
        raise ConfigError(
            f"impute={value!r} is not known; expected one of "
            f"{', '.join(m.value for m in Imputation)}"
        ) from exc


def _samples_with(mask: npt.NDArray[np.bool_]) -> int:
    return int(mask.reshape(len(mask), int(np.prod(mask.shape[1:]))).any(axis=1).sum())


def _deduplicate(
    x: npt.NDArray[np.float32], y: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int64], int]:
    """Indices of first occurrences of each (features, label) pair, and label-conflict count."""
    n = len(x)
    if n == 0:
        return np.arange(0, dtype=np.int64), 0
    feats = _row_keys(np.ascontiguousarray(x).reshape(n, -1).view(np.uint8))
    pairs = _row_keys(
        np.concatenate([feats.view(np.uint8).reshape(n, -1), _bytes(y.astype(np.int64))], axis=1)
    )
    _, first = np.unique(pairs, return_index=True)
    keep = np.sort(first).astype(np.int64)
    # Among kept samples, a feature group holding more than one distinct label is a conflict.
    _, group = np.unique(feats[keep], return_inverse=True)
    distinct = np.unique(np.stack([group, y[keep]], axis=1), axis=0)
    labels_per_group = np.bincount(distinct[:, 0])
    return keep, int((labels_per_group[group] > 1).sum())


def _bytes(a: npt.NDArray[np.int64]) -> npt.NDArray[np.uint8]:
    return np.ascontiguousarray(a).reshape(len(a), -1).view(np.uint8)


def _row_keys(rows: npt.NDArray[np.uint8]) -> npt.NDArray[np.void]:
    """One opaque value per row, so ``np.unique`` compares whole rows by their bytes."""
    rows = np.ascontiguousarray(rows)
    return rows.view(np.dtype((np.void, rows.shape[1]))).reshape(-1)


def _clip(
    x: npt.NDArray[np.float32], scope: ClipScope, clip_z: float
) -> tuple[npt.NDArray[np.bool_], int]:
    """Clip ``x`` in place; return the mask of clipped values and the groups left unclipped."""
    n = len(x)
    groups = x.reshape(n, -1, 1) if scope is ClipScope.COLUMN else x.reshape(n, x.shape[1], -1)
    median = np.nanmedian(groups, axis=(0, 2), keepdims=True)
    sigma = MAD_TO_SIGMA * np.nanmedian(np.abs(groups - median), axis=(0, 2), keepdims=True)
    flat = sigma == 0
    lo = np.where(flat, -np.inf, median - clip_z * sigma)
    hi = np.where(flat, np.inf, median + clip_z * sigma)
    clipped = (groups < lo) | (groups > hi)
    np.clip(groups, lo, hi, out=groups)
    return clipped.reshape(x.shape), int(flat.sum())


def _check_imputable(missing: npt.NDArray[np.bool_]) -> None:
    """Fail before any statistic is taken if a feature position is missing in every sample."""
    if not len(missing):
        return
    empty = np.flatnonzero(missing.reshape(len(missing), -1).all(axis=0))
    if len(empty):
        position = tuple(int(i) for i in np.unravel_index(int(empty[0]), missing.shape[1:]))
        raise DataError(
            f"feature {position} has no finite value in any of the {len(missing)} samples "
            f"({len(empty)} such features); there is nothing to impute from",
            hint="drop that feature (column) from the data",
        )


def _impute(x: npt.NDArray[np.float32], missing: npt.NDArray[np.bool_], method: Imputation) -> None:
    """Fill ``x`` (NaN where ``missing``) in place, per feature position."""
    if not missing.any():
        return
    flat = x.reshape(len(x), -1)
    holes = missing.reshape(len(x), -1)
    if method is Imputation.ZERO:
        fill = np.zeros(flat.shape[1], dtype=np.float32)
    elif method is Imputation.MEAN:
        fill = np.nanmean(flat, axis=0)
    else:
        fill = np.nanmedian(flat, axis=0)
    rows, cols = np.nonzero(holes)
    flat[rows, cols] = fill[cols]
