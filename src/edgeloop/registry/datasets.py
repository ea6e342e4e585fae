"""Data set versions: their value, the store interface and the shared rules.

A data set version is immutable and content-addressed: its samples (x, y, sample ids, classes,
predictions) are one canonical NPZ (:meth:`SampleSet.to_npz_bytes`) kept in the artifact store
under its sha256, which is also the version's ``content_hash``. The row beside it carries what a
person asks about a version without loading it: sizes, classes, label counts and provenance.

Every backend (``MemoryDatasetStore``, ``SqlDatasetStore`` in ``dataset_stores``) keeps one
contract, checked by one shared test class:

- ``add`` gives each name the versions 1, 2, 3, ...; there is no update and no removal, so
  ``name:3`` always means the same samples;
- the same content under the same name is refused (``ConflictError`` naming the version that
  holds it): storing a version twice is a mistake, not a new version;
- ``get`` fails with ``NotFoundError`` listing the names or versions that exist.
"""

from __future__ import annotations

import builtins
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from edgeloop.core.errors import ConfigError, ConflictError, NotFoundError
from edgeloop.data.dataset import Modality
from edgeloop.registry.artifacts import check_sha256

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_MAX_LISTED = 20


@dataclass(frozen=True, slots=True)
class DatasetRef:
    """``name`` or ``name:version`` of a stored data set; no version means the latest."""

    name: str
    version: int | None = None

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ConfigError(
                f"data set name {self.name!r} is not valid; expected 1-128 letters, digits, "
                "'.', '_' or '-', starting with a letter or digit",
                hint="e.g. digits-captures",
            )
        if self.version is not None and self.version < 1:
            raise ConfigError(f"data set version {self.version} is not valid; versions start at 1")

    @classmethod
    def parse(cls, text: str) -> DatasetRef:
        """Parse ``name[:version]``. Raises ConfigError naming the bad part."""
        name, sep, ver = text.strip().partition(":")
        if sep and not (ver.isdigit() and int(ver) >= 1):
            raise ConfigError(
                f"data set reference {text!r}: version {ver!r} is not a positive integer",
                hint="write NAME:VERSION, e.g. digits-captures:2 (see `edgeloop data list`)",
            )
        return cls(name, int(ver) if sep else None)

    def __str__(self) -> str:
        return self.name if self.version is None else f"{self.name}:{self.version}"


@dataclass(frozen=True, slots=True)
class Provenance:
    """Where the samples came from: nodes, the model that served them, why they were kept,
    when (first and last capture, UTC), and the stored versions they derive from."""

    node_ids: tuple[str, ...] = ()
    model: str | None = None
    reasons: tuple[str, ...] = ()
    time_range: tuple[datetime, datetime] | None = None
    parents: tuple[DatasetRef, ...] = ()
    note: str = ""

    def __post_init__(self) -> None:
        if self.time_range is not None:
            start, end = self.time_range
            if start.utcoffset() is None or end.utcoffset() is None or end < start:
                raise ConfigError(
                    f"time range {start.isoformat()}..{end.isoformat()} must be two UTC times, "
                    "the first not after the second"
                )
        if any(p.version is None for p in self.parents):
            raise ConfigError("a parent data set must name its version (NAME:VERSION)")

    def to_dict(self) -> dict[str, Any]:
        span = self.time_range
        return {
            "node_ids": list(self.node_ids),
            "model": self.model,
            "reasons": list(self.reasons),
            "time_range": None if span is None else [span[0].isoformat(), span[1].isoformat()],
            "parents": [str(p) for p in self.parents],
            "note": self.note,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Provenance:
        span = d.get("time_range")
        return cls(
            node_ids=tuple(str(n) for n in d.get("node_ids", ())),
            model=None if d.get("model") is None else str(d["model"]),
            reasons=tuple(str(r) for r in d.get("reasons", ())),
            time_range=None
            if span is None
            else (datetime.fromisoformat(span[0]), datetime.fromisoformat(span[1])),
            parents=tuple(DatasetRef.parse(str(p)) for p in d.get("parents", ())),
            note=str(d.get("note", "")),
        )


@dataclass(frozen=True, slots=True)
class DatasetEntry:
    """What a new version is made of (everything but its number and time)."""

    name: str
    content_hash: str
    size_bytes: int
    samples: int
    sample_shape: tuple[int, ...]
    classes: tuple[str, ...]
    modality: Modality
    labelled: int
    provenance: Provenance = field(default_factory=Provenance)

    def __post_init__(self) -> None:
        DatasetRef(self.name)
        check_sha256(self.content_hash)
        if self.size_bytes < 0 or not 0 <= self.labelled <= self.samples:
            raise ConfigError(
                f"data set {self.name!r}: {self.labelled} labelled of {self.samples} samples "
                f"({self.size_bytes} bytes) is not a valid count"
            )

    @property
    def unlabelled(self) -> int:
        return self.samples - self.labelled

    def to_json(self) -> dict[str, Any]:
        """The row's JSON columns (shape, classes, provenance) as strict JSON text."""
        return {
            "sample_shape": json.dumps(list(self.sample_shape)),
            "classes": json.dumps(list(self.classes)),
            "provenance": json.dumps(self.provenance.to_dict(), sort_keys=True),
        }


@dataclass(frozen=True, slots=True)
class DatasetVersion:
    """One stored, immutable data set version."""

    entry: DatasetEntry
    version: int
    created_at: datetime

    def __post_init__(self) -> None:
        if self.version < 1:
            raise ConfigError(f"data set version {self.version} is not valid; versions start at 1")
        if self.created_at.utcoffset() is None:
            raise ConfigError(f"created_at {self.created_at.isoformat()} has no time zone")

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def ref(self) -> DatasetRef:
        return DatasetRef(self.entry.name, self.version)

    def to_dict(self) -> dict[str, Any]:
        e = self.entry
        return {
            "name": e.name,
            "version": self.version,
            "ref": str(self.ref),
            "content_hash": e.content_hash,
            "size_bytes": e.size_bytes,
            "samples": e.samples,
            "sample_shape": list(e.sample_shape),
            "classes": list(e.classes),
            "modality": e.modality.value,
            "labelled": e.labelled,
            "unlabelled": e.unlabelled,
            "provenance": e.provenance.to_dict(),
            "created_at": self.created_at.isoformat(),
        }


def entry_from_row(row: Mapping[Any, Any]) -> DatasetEntry:
    """Inverse of the stored columns (``to_json`` plus the plain ones)."""
    return DatasetEntry(
        name=str(row["name"]),
        content_hash=str(row["content_hash"]),
        size_bytes=int(row["size_bytes"]),
        samples=int(row["samples"]),
        sample_shape=tuple(int(d) for d in json.loads(row["sample_shape"])),
        classes=tuple(str(c) for c in json.loads(row["classes"])),
        modality=Modality(str(row["modality"])),
        labelled=int(row["labelled"]),
        provenance=Provenance.from_dict(json.loads(row["provenance"])),
    )


class DatasetStore(Protocol):
    """Data set version rows by name. Memory and SQL implementations (``dataset_stores``)."""

    def add(self, entry: DatasetEntry) -> DatasetVersion:
        """Store ``entry`` as the next version of its name; refuse content the name holds."""
        ...

    def get(self, ref: DatasetRef) -> DatasetVersion:
        """The version ``ref`` names; the latest when it names none."""
        ...

    def list(self, name: str | None = None) -> builtins.list[DatasetVersion]:
        """All versions (of one name), ordered by name then version."""
        ...

    def close(self) -> None: ...


def duplicate(entry: DatasetEntry, existing: int) -> ConflictError:
    """The error for content that ``entry.name`` already holds as version ``existing``."""
    return ConflictError(
        f"data set {entry.name}:{existing} already holds these samples "
        f"(content {entry.content_hash[:12]}...); a version is stored once and never changed",
        hint=f"use {entry.name}:{existing}, or change the samples to make a new version",
    )


def not_found(ref: DatasetRef, known: Mapping[str, Sequence[int]]) -> NotFoundError:
    """The error for a missing ``ref``, listing what exists (``known``: name -> versions)."""
    versions = sorted(known.get(ref.name, ()))
    if versions:
        return NotFoundError(
            f"data set {str(ref)!r} not found; {ref.name!r} has versions "
            + ", ".join(map(str, versions)),
            hint=f"use one of them, e.g. {ref.name}:{versions[-1]}",
        )
    names = sorted(known)
    shown = ", ".join(names[:_MAX_LISTED]) or "(none)"
    if len(names) > _MAX_LISTED:
        shown += f" and {len(names) - _MAX_LISTED} more"
    return NotFoundError(
        f"no stored data set named {ref.name!r}; stored names: {shown}",
        hint="see `edgeloop data list`",
    )
