"""``SampleSet``: captured samples with ids, partial labels and the model's predictions.

The value a stored data set version holds (``edgeloop.registry.datasets``) and the label queue
works on (``edgeloop.data.labels``). Unlike :class:`Dataset`, a sample may be unlabelled
(``y == UNLABELLED``) and every sample has a unique id (a capture's request id, or an index).

Its canonical NPZ (:meth:`SampleSet.to_npz_bytes`) is byte-for-byte reproducible: fixed member
order, fixed zip timestamps, no compression. Its sha256 is the version's content hash, so the
same samples always get the same hash and the same artifact.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from edgeloop.core.errors import DataError
from edgeloop.data.dataset import Dataset, Modality

UNLABELLED = -1  # y of a sample nobody labelled yet
NO_PREDICTION = -1  # prediction of a sample the model did not score
_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest zip timestamp: fixed so bytes are reproducible
_MEMBERS = ("x", "y", "sample_ids", "classes", "modality", "prediction", "confidence")


@dataclass(frozen=True, eq=False)
class SampleSet:
    """Samples ``x`` with unique ``sample_ids``; ``y`` holds class indices or ``UNLABELLED``.

    ``prediction`` / ``confidence`` are what the serving model answered (``NO_PREDICTION`` /
    NaN when unknown). Raises DataError when the arrays disagree.
    """

    x: npt.NDArray[np.float32]
    y: npt.NDArray[np.int64]
    sample_ids: tuple[str, ...]
    classes: tuple[str, ...]
    modality: Modality
    prediction: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    confidence: npt.NDArray[np.float32] = field(default_factory=lambda: np.zeros(0, np.float32))

    def __post_init__(self) -> None:
        n = int(self.x.shape[0]) if self.x.ndim >= 2 else -1
        if n < 0:
            raise DataError(f"samples have shape {self.x.shape}; expected (samples, ...)")
        if not len(self.prediction) and n:
            object.__setattr__(self, "prediction", np.full(n, NO_PREDICTION, np.int64))
        if not len(self.confidence) and n:
            object.__setattr__(self, "confidence", np.full(n, np.nan, np.float32))
        for label, arr in (("y", self.y), ("prediction", self.prediction)):
            if arr.shape != (n,):
                raise DataError(f"{label} has shape {arr.shape}; expected ({n},), one per sample")
            if n and (arr.min() < -1 or arr.max() >= len(self.classes)):
                raise DataError(
                    f"{label} spans {int(arr.min())}..{int(arr.max())}; expected -1 (none) or "
                    f"an index below {len(self.classes)} (classes: {', '.join(self.classes)})"
                )
        if self.confidence.shape != (n,):
            raise DataError(f"confidence has shape {self.confidence.shape}; expected ({n},)")
        if len(self.sample_ids) != n:
            raise DataError(f"{len(self.sample_ids)} sample ids for {n} samples; expected one each")
        if len(set(self.sample_ids)) != n or any(not s for s in self.sample_ids):
            raise DataError("sample ids must be unique and non-empty", hint="use request ids")
        if len(set(self.classes)) != len(self.classes) or not self.classes:
            raise DataError(f"classes {self.classes} must be a non-empty list of unique names")

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x.shape[1:])

    @property
    def labelled(self) -> int:
        return int(np.count_nonzero(self.y != UNLABELLED))

    @property
    def unlabelled(self) -> int:
        return len(self) - self.labelled

    def index(self) -> dict[str, int]:
        """Sample id -> row."""
        return {sid: i for i, sid in enumerate(self.sample_ids)}

    def with_labels(self, labels: dict[str, int]) -> SampleSet:
        """A new set with ``labels`` (sample id -> class index) written over ``y``."""
        y = self.y.copy()
        rows = self.index()
        for sid, label in labels.items():
            y[rows[sid]] = label
        return SampleSet(
            self.x, y, self.sample_ids, self.classes, self.modality, self.prediction,
            self.confidence,
        )  # fmt: skip

    def labelled_dataset(self, name: str) -> Dataset:
        """The labelled samples as a :class:`Dataset` (what training and the loaders use)."""
        keep = np.flatnonzero(self.y != UNLABELLED)
        return Dataset(
            name=name,
            x=self.x[keep],
            y=self.y[keep],
            classes=self.classes,
            modality=self.modality,
            source=f"stored data set {name}",
        )

    @classmethod
    def from_dataset(cls, ds: Dataset, sample_ids: tuple[str, ...] | None = None) -> SampleSet:
        """Every sample of ``ds`` labelled; ids are the row numbers unless given."""
        ids = sample_ids if sample_ids is not None else tuple(str(i) for i in range(len(ds)))
        return cls(ds.x, ds.y.astype(np.int64), ids, ds.classes, ds.modality)

    def to_npz_bytes(self) -> bytes:
        """The canonical NPZ: same samples, same bytes (and so the same sha256)."""
        arrays: dict[str, npt.NDArray[Any]] = {
            "x": np.ascontiguousarray(self.x, dtype="<f4"),
            "y": np.ascontiguousarray(self.y, dtype="<i8"),
            "sample_ids": np.asarray(self.sample_ids, dtype=np.str_),
            "classes": np.asarray(self.classes, dtype=np.str_),
            "modality": np.asarray(self.modality.value, dtype=np.str_),
            "prediction": np.ascontiguousarray(self.prediction, dtype="<i8"),
            "confidence": np.ascontiguousarray(self.confidence, dtype="<f4"),
        }
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
            for key in _MEMBERS:
                member = io.BytesIO()
                np.lib.format.write_array(member, arrays[key], allow_pickle=False)
                zf.writestr(zipfile.ZipInfo(f"{key}.npy", date_time=_EPOCH), member.getvalue())
        return buf.getvalue()

    def content_hash(self) -> str:
        return hashlib.sha256(self.to_npz_bytes()).hexdigest()

    @classmethod
    def from_npz_bytes(cls, data: bytes, where: str) -> SampleSet:
        """Inverse of :meth:`to_npz_bytes`. Raises DataError naming ``where`` when malformed."""
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                a = {k: npz[k] for k in _MEMBERS}
            return cls(
                x=a["x"].astype(np.float32),
                y=a["y"].astype(np.int64),
                sample_ids=tuple(str(s) for s in a["sample_ids"].tolist()),
                classes=tuple(str(c) for c in a["classes"].tolist()),
                modality=Modality(str(a["modality"])),
                prediction=a["prediction"].astype(np.int64),
                confidence=a["confidence"].astype(np.float32),
            )
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise DataError(
                f"{where} is not a stored sample set ({exc})",
                hint="the artifact is damaged; check it with `edgeloop registry verify`",
            ) from exc
