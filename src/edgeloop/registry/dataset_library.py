"""``DatasetLibrary``: data set versions (a ``DatasetStore``) plus their bytes (artifacts).

Writes go in the registry's order: the canonical NPZ into the artifact store first (content-
addressed, a leftover is harmless), the row second (the commit is the moment a version exists);
when the row is refused the artifact is deleted again unless a stored version uses it. Reads
check the bytes against the content hash, so a changed artifact is refused, never served.

This is what the CLI, the control plane and the retraining job call; it does no HTTP.
"""

from __future__ import annotations

import builtins
import csv
import hashlib
import io
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt

from edgeloop.core.errors import ConfigError, DataError, EdgeError, UntrustedArtifactError
from edgeloop.core.files import write_atomic
from edgeloop.core.settings import Settings
from edgeloop.data.labels import Answer, LabelImport, resolve
from edgeloop.data.samples import SampleSet
from edgeloop.registry.artifacts import ArtifactStore, open_artifacts
from edgeloop.registry.dataset_stores import SqlDatasetStore
from edgeloop.registry.datasets import (
    DatasetEntry,
    DatasetRef,
    DatasetStore,
    DatasetVersion,
    Provenance,
)

EXPORT_SUFFIXES = (".npz", ".csv")


@dataclass(frozen=True, slots=True)
class Labelled:
    """What a label import did: the counts, the version it was applied to, and the version
    holding the result (None when nothing applied; ``created`` False when it already existed)."""

    labels: LabelImport
    parent: DatasetVersion
    version: DatasetVersion | None
    created: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "parent": str(self.parent.ref),
            "version": None if self.version is None else str(self.version.ref),
            "created": self.created,
            **self.labels.to_dict(),
        }


class DatasetLibrary:
    """Add, find, load, label and export stored data set versions."""

    def __init__(self, store: DatasetStore, artifacts: ArtifactStore) -> None:
        self.store = store
        self.artifacts = artifacts

    @classmethod
    def open(cls, settings: Settings | None = None) -> DatasetLibrary:
        """The library in the registry of ``settings`` (its database and artifact store).

        Raises:
            ConfigError: bad home folder or database URL.
            StoreError: the database cannot be reached.
        """
        settings = (settings if settings is not None else Settings.load()).ensure()
        return cls(SqlDatasetStore(settings.db_url), open_artifacts(settings))

    def __enter__(self) -> DatasetLibrary:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.store.close()

    def add(
        self, name: str, samples: SampleSet, provenance: Provenance | None = None
    ) -> DatasetVersion:
        """Store ``samples`` as the next version of ``name``.

        Raises:
            ConfigError: a bad name or provenance.
            DataError: ``samples`` is empty.
            ConflictError: ``name`` already holds these samples (the message names the version).
            StoreError: storing failed; nothing was left behind.
        """
        if not len(samples):
            raise DataError(
                f"data set {name!r}: no samples to store; a version holds at least one",
                hint="capture or load some samples first",
            )
        data = samples.to_npz_bytes()
        entry = DatasetEntry(
            name=name,
            content_hash=hashlib.sha256(data).hexdigest(),
            size_bytes=len(data),
            samples=len(samples),
            sample_shape=samples.sample_shape,
            classes=samples.classes,
            modality=samples.modality,
            labelled=samples.labelled,
            provenance=provenance or Provenance(),
        )
        with tempfile.TemporaryDirectory(prefix="edgeloop-dataset-") as tmp:
            staged = Path(tmp) / "samples.npz"
            staged.write_bytes(data)
            held = self.artifacts.exists(entry.content_hash)
            self.artifacts.put(staged)
        try:
            return self.store.add(entry)
        except EdgeError:
            if not held and not self._used(entry.content_hash):
                self.artifacts.delete(entry.content_hash)
            raise

    def _used(self, sha: str) -> bool:
        return any(v.entry.content_hash == sha for v in self.store.list())

    def get(self, ref: DatasetRef | str) -> DatasetVersion:
        """The version ``ref`` names (the latest without a number). Raises NotFoundError."""
        return self.store.get(DatasetRef.parse(ref) if isinstance(ref, str) else ref)

    def list(self, name: str | None = None) -> builtins.list[DatasetVersion]:
        return self.store.list(name)

    def samples(self, ref: DatasetRef | str) -> SampleSet:
        """The samples of a version, checked against its content hash.

        Raises:
            NotFoundError: no such version, or its artifact is missing.
            UntrustedArtifactError: the artifact's bytes no longer hash to the content hash.
        """
        version = self.get(ref)
        data = self.artifacts.path(version.entry.content_hash).read_bytes()
        if hashlib.sha256(data).hexdigest() != version.entry.content_hash:
            raise UntrustedArtifactError(
                f"the samples of {version.ref} were changed on disk: they no longer hash to "
                f"{version.entry.content_hash}",
                hint="a stored version is immutable; restore the artifact from a backup",
            )
        return SampleSet.from_npz_bytes(data, str(version.ref))

    def label(
        self, ref: DatasetRef | str, answers: builtins.list[Answer], note: str = ""
    ) -> Labelled:
        """Apply ``answers`` to a version. Applied labels make a NEW version (the old one as
        its parent); when a stored version of the name already holds exactly the labelled
        samples (the same file imported twice) that version is returned, and none is made.

        Raises:
            NotFoundError / UntrustedArtifactError: as :meth:`samples`.
            StoreError: storing the new version failed; nothing was left behind.
        """
        parent = self.get(ref)
        samples = self.samples(parent.ref)
        result = resolve(answers, samples)
        if not result.labels:
            return Labelled(result, parent, None, created=False)
        labelled = samples.with_labels(dict(result.labels))
        digest = labelled.content_hash()
        for held in self.store.list(parent.name):
            if held.entry.content_hash == digest:
                return Labelled(result, parent, held, created=False)
        old = parent.entry.provenance
        provenance = Provenance(
            node_ids=old.node_ids,
            model=old.model,
            reasons=old.reasons,
            time_range=old.time_range,
            parents=(parent.ref,),
            note=note or f"{result.applied} labels applied to {parent.ref}",
        )
        made = self.add(parent.name, labelled, provenance)
        return Labelled(result, parent, made, created=True)

    def export(self, ref: DatasetRef | str, path: Path) -> tuple[DatasetVersion, int]:
        """Write the labelled samples of a version as ``.npz`` (x, y, classes) or ``.csv``
        (one column per feature, then ``label``), files ``load_data`` reads.

        Unlabelled samples are left out (a loader needs a label per sample). Returns the
        version and the number of samples written.

        Raises:
            ConfigError: an unsupported suffix, or no labelled sample to write.
        """
        path = Path(path)
        if path.suffix.lower() not in EXPORT_SUFFIXES:
            raise ConfigError(
                f"cannot export to {str(path)!r}: the suffix must be one of "
                + ", ".join(EXPORT_SUFFIXES),
                hint="e.g. --out captures.npz",
            )
        version = self.get(ref)
        ds = self.samples(version.ref).labelled_dataset(version.name)
        if not len(ds):
            raise ConfigError(
                f"{version.ref} has no labelled sample to export ({version.entry.samples} "
                "unlabelled)",
                hint=f"label it first: `edgeloop data label export {version.ref} --out tasks.json`",
            )
        if path.suffix.lower() == ".npz":
            buf = io.BytesIO()
            np.savez(buf, x=ds.x, y=ds.y, classes=np.asarray(ds.classes, dtype=np.str_))
            write_atomic(path, buf.getvalue())
        else:
            write_atomic(path, _csv_bytes(ds.x.reshape(len(ds), -1), ds.y, ds.classes))
        return version, len(ds)


def _csv_bytes(
    x: npt.NDArray[np.float32], y: npt.NDArray[np.int64], classes: tuple[str, ...]
) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*(f"f{j}" for j in range(x.shape[1])), "label"])
    for row, label in zip(x.tolist(), y.tolist(), strict=True):
        # repr of a float32 widened to float64 round-trips exactly back to the float32.
        writer.writerow([*(repr(v) for v in row), classes[label]])
    return buf.getvalue().encode()
