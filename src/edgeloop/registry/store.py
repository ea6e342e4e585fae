"""The model version store: its value (``ModelVersion``), its interface and shared rules.

Every backend (``MemoryModelStore``, ``SqlModelStore``) keeps the same contract, checked by one
shared test class:

- ``add`` gives each name the versions 1, 2, 3, ... with no duplicate under concurrent writers;
  a number is never handed out twice, even after its version was removed, so ``name:3`` always
  means the same bytes wherever it was copied to.
- ``get`` / ``remove`` fail with ``NotFoundError`` listing the names or versions that do exist.
- A manifest goes in and comes back through the same JSON text, so every backend returns the
  same value.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from edgeloop.core.errors import ConfigError, ConflictError, NotFoundError
from edgeloop.core.types import Manifest, ModelRef
from edgeloop.registry.artifacts import check_sha256

# A not-found message lists at most this many names, so it stays one readable line.
_MAX_LISTED = 20


@dataclass(frozen=True, slots=True)
class ModelVersion:
    """One registered model version: its manifest and the artifact holding its bytes."""

    name: str
    version: int
    manifest: Manifest
    artifact_sha256: str
    size_bytes: int
    created_at: datetime

    def __post_init__(self) -> None:
        if self.name != self.manifest.name:
            raise ConfigError(
                f"model version {self.name!r} carries a manifest named {self.manifest.name!r}",
                hint="the manifest name and the registered name must be the same",
            )
        if self.version < 1:
            raise ConfigError(f"model version {self.version} is not valid; versions start at 1")
        check_sha256(self.artifact_sha256)
        if self.size_bytes < 0:
            raise ConfigError(f"artifact size {self.size_bytes} of {self.name!r} is negative")
        if self.created_at.utcoffset() is None:
            raise ConfigError(
                f"created_at {self.created_at.isoformat()} of {self.name}:{self.version} "
                "has no time zone; expected a UTC time"
            )

    @property
    def ref(self) -> ModelRef:
        return ModelRef(self.name, self.version)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "ref": str(self.ref),
            "artifact_sha256": self.artifact_sha256,
            "size_bytes": self.size_bytes,
            "created_at": self.created_at.isoformat(),
            "manifest": self.manifest.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelVersion:
        """Inverse of ``to_dict`` (the ``ref`` key is derived and ignored)."""
        return cls(
            name=str(d["name"]),
            version=int(d["version"]),
            manifest=Manifest.from_dict(d["manifest"]),
            artifact_sha256=str(d["artifact_sha256"]),
            size_bytes=int(d["size_bytes"]),
            created_at=datetime.fromisoformat(str(d["created_at"])),
        )


class ModelStore(Protocol):
    """Model versions by name. One small interface; memory and SQL implementations."""

    def add(
        self, manifest: Manifest, artifact_sha256: str, size_bytes: int, version: int | None = None
    ) -> ModelVersion:
        """Register the next version of ``manifest.name``, or exactly ``version`` when given
        (it must be above every number the name ever had: numbers are never reused)."""
        ...

    def get(self, ref: ModelRef) -> ModelVersion:
        """The version ``ref`` names; the latest when ``ref.version`` is None."""
        ...

    def list(self, name: str | None = None) -> list[ModelVersion]:
        """All versions (of one name), ordered by name then version."""
        ...

    def remove(self, ref: ModelRef) -> ModelVersion:
        """Delete the version ``ref`` names (which must carry a version); return it."""
        ...

    def children(self, ref: ModelRef) -> builtins.list[ModelVersion]:
        """Versions whose ``manifest.parent`` is ``ref`` resolved like ``get`` (lineage)."""
        ...

    def references(self, sha256: str) -> int:
        """How many versions use artifact ``sha256``."""
        ...

    def close(self) -> None:
        """Release connections; the store is unusable afterwards."""
        ...


def utc_now() -> datetime:
    return datetime.now(UTC)


def manifest_to_json(manifest: Manifest) -> str:
    """The stored form of a manifest: strict JSON with sorted keys.

    Raises:
        ConfigError: the manifest holds a value JSON cannot carry (an object, NaN, infinity).
    """
    try:
        return json.dumps(manifest.to_dict(), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"manifest of {manifest.name!r} cannot be stored as JSON: {exc}",
            hint="keep recipe/metrics values to str, int, float, bool, lists and dicts; "
            "report a figure that could not be measured as None, not NaN",
        ) from exc


def manifest_from_json(text: str) -> Manifest:
    return Manifest.from_dict(json.loads(text))


def require_version(ref: ModelRef, action: str) -> int:
    """Destructive actions never guess "latest": return ``ref.version`` or raise ConfigError."""
    if ref.version is None:
        raise ConfigError(
            f"{action} needs an explicit version; {str(ref)!r} names none",
            hint=f"write {ref.name}:VERSION (see `edgeloop registry list --name {ref.name}`)",
        )
    return ref.version


def not_found(ref: ModelRef, known: Mapping[str, Sequence[int]]) -> NotFoundError:
    """The error for a missing ``ref``, listing what does exist (``known``: name -> versions)."""
    versions = known.get(ref.name)
    if versions:
        listed = ", ".join(str(v) for v in sorted(versions))
        return NotFoundError(
            f"model {str(ref)!r} not found; {ref.name!r} has versions {listed}",
            hint=f"use one of them, e.g. {ref.name}:{max(versions)}",
        )
    names = _listing(sorted(known))
    return NotFoundError(
        f"no model named {ref.name!r} in the registry; known names: {names}",
        hint="see `edgeloop registry list`, or publish it with `edgeloop registry publish`",
    )


def _listing(names: Iterable[str]) -> str:
    items = list(names)
    if not items:
        return "(none)"
    shown = ", ".join(items[:_MAX_LISTED])
    more = len(items) - _MAX_LISTED
    return f"{shown} and {more} more" if more > 0 else shown


def version_taken(name: str, wanted: int, last: int) -> ConflictError:
    """The error for an explicit ``wanted`` version at or below the name's highest number."""
    return ConflictError(
        f"{name}:{wanted} cannot be registered: {name!r} has had versions up to {last}, and "
        "version numbers are never reused (not even after a removal)",
        hint=f"register it as the next version (no number), or with a number above {last}",
    )
