"""The ``Dataset`` value: arrays plus the schema that says what they mean.

A data set version is identified by :attr:`Dataset.content_hash`, a sha256 over the arrays'
dtypes, shapes and bytes and the class names, so the same data always hashes the same whatever
file it came from.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from edgeloop.core.errors import DataError


class Task(StrEnum):
    """What the labels mean."""

    CLASSIFICATION = "classification"
    # y holds 0 (normal) / 1 (anomaly); models learn from normal samples only.
    ANOMALY = "anomaly"


class Modality(StrEnum):
    """What one sample is; picks augmentations and model architectures.

    Sample shapes: IMAGE (channels, height, width); SIGNAL (channels, time);
    TABULAR (features,).
    """

    IMAGE = "image"
    SIGNAL = "signal"
    TABULAR = "tabular"


@dataclass(frozen=True, eq=False)
class Dataset:
    """Samples ``x`` (float32, first axis = sample) and integer labels ``y``.

    ``classes[i]`` names label ``i``. ``source`` says where the data came from (a package file,
    a user path) so reports can cite it.
    """

    name: str
    x: npt.NDArray[np.float32]
    y: npt.NDArray[np.int64]
    classes: tuple[str, ...]
    modality: Modality
    task: Task = Task.CLASSIFICATION
    source: str = ""
    description: str = ""
    # What loading changed and the user should know (images made grey, resized): shown by the CLI.
    notes: tuple[str, ...] = ()
    _hash: list[str] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if self.x.ndim < 2:
            raise DataError(
                f"data set {self.name!r}: x has shape {self.x.shape}; expected (samples, ...)"
            )
        if self.x.shape[0] != self.y.shape[0]:
            raise DataError(
                f"data set {self.name!r}: {self.x.shape[0]} samples but {self.y.shape[0]} labels",
                hint="every sample needs exactly one label",
            )
        if self.y.ndim != 1:
            raise DataError(f"data set {self.name!r}: y has shape {self.y.shape}; expected (n,)")
        if len(self.y) and (self.y.min() < 0 or self.y.max() >= len(self.classes)):
            raise DataError(
                f"data set {self.name!r}: labels span {int(self.y.min())}..{int(self.y.max())} "
                f"but only {len(self.classes)} classes are named"
            )

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def content_hash(self) -> str:
        """sha256 of the data's content, computed once and cached."""
        if not self._hash:
            h = hashlib.sha256()
            for arr in (self.x, self.y):
                c = np.ascontiguousarray(arr)
                h.update(f"{c.dtype.str}{c.shape}".encode())
                h.update(c.tobytes())
            h.update("\x1f".join(self.classes).encode())
            h.update(f"{self.modality.value}/{self.task.value}".encode())
            self._hash.append(h.hexdigest())
        return self._hash[0]

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.y, minlength=self.num_classes)
        return {c: int(n) for c, n in zip(self.classes, counts, strict=True)}

    def subset(self, index: npt.NDArray[np.int64], name: str | None = None) -> Dataset:
        """A new data set holding the samples at ``index`` (same schema)."""
        return Dataset(
            name=name or self.name,
            x=self.x[index],
            y=self.y[index],
            classes=self.classes,
            modality=self.modality,
            task=self.task,
            source=self.source,
            description=self.description,
            notes=self.notes,
        )

    def with_arrays(
        self, x: npt.NDArray[np.float32], y: npt.NDArray[np.int64], name: str | None = None
    ) -> Dataset:
        """Same schema, new samples (after cleaning or augmentation)."""
        return Dataset(
            name=name or self.name,
            x=x,
            y=y,
            classes=self.classes,
            modality=self.modality,
            task=self.task,
            source=self.source,
            description=self.description,
            notes=self.notes,
        )


@dataclass(frozen=True)
class Splits:
    """Train / validation / test parts of one data set; ``test`` is held out from all fitting."""

    train: Dataset
    val: Dataset
    test: Dataset
    seed: int
