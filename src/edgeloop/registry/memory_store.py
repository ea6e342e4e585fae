"""An in-memory ``ModelStore``: the reference implementation of the contract, for tests and demos.

It keeps manifests as the same JSON text the SQL store writes, so both return equal values.
One lock serialises every call, which is how the SQL store behaves per version number.
"""

from __future__ import annotations

import builtins
import threading
from dataclasses import dataclass
from datetime import datetime

from edgeloop.core.types import Manifest, ModelRef
from edgeloop.registry.artifacts import check_sha256
from edgeloop.registry.store import (
    ModelVersion,
    manifest_from_json,
    manifest_to_json,
    not_found,
    require_version,
    utc_now,
    version_taken,
)


@dataclass(frozen=True, slots=True)
class _Row:
    name: str
    version: int
    manifest_json: str
    artifact_sha256: str
    size_bytes: int
    created_at: datetime

    def value(self) -> ModelVersion:
        return ModelVersion(
            self.name,
            self.version,
            manifest_from_json(self.manifest_json),
            self.artifact_sha256,
            self.size_bytes,
            self.created_at,
        )


class MemoryModelStore:
    """A ``ModelStore`` held in a dict; lost when the process ends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: dict[tuple[str, int], _Row] = {}
        # Highest number ever given per name: removed numbers are never handed out again.
        self._last: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"MemoryModelStore({len(self._rows)} versions)"

    def add(
        self, manifest: Manifest, artifact_sha256: str, size_bytes: int, version: int | None = None
    ) -> ModelVersion:
        """Register the next version of ``manifest.name`` (exactly ``version`` when given).

        Raises:
            ConfigError: a malformed sha256, a negative size, or a manifest that is not JSON.
            ConflictError: ``version`` is not above every number the name ever had.
        """
        check_sha256(artifact_sha256)
        text = manifest_to_json(manifest)
        with self._lock:
            last = self._last.get(manifest.name, 0)
            if version is not None and version <= last:
                raise version_taken(manifest.name, version, last)
            version = last + 1 if version is None else version
            row = _Row(manifest.name, version, text, artifact_sha256, size_bytes, utc_now())
            value = row.value()  # validates before anything is stored
            self._last[manifest.name] = version
            self._rows[(row.name, version)] = row
        return value

    def get(self, ref: ModelRef) -> ModelVersion:
        """The version ``ref`` names, the latest when it names none.

        Raises:
            NotFoundError: naming ``ref`` and the names / versions that exist.
        """
        with self._lock:
            return self._find(ref).value()

    def list(self, name: str | None = None) -> builtins.list[ModelVersion]:
        """All versions, or those of ``name``, ordered by name then version."""
        with self._lock:
            rows = sorted(self._rows.values(), key=lambda r: (r.name, r.version))
        return [r.value() for r in rows if name is None or r.name == name]

    def remove(self, ref: ModelRef) -> ModelVersion:
        """Delete version ``ref`` and return it.

        Raises:
            ConfigError: ``ref`` carries no version.
            NotFoundError: no such version.
        """
        require_version(ref, "removing a model version")
        with self._lock:
            row = self._find(ref)
            del self._rows[(row.name, row.version)]
        return row.value()

    def children(self, ref: ModelRef) -> builtins.list[ModelVersion]:
        """Versions derived from ``ref`` (the latest when it names no version).

        Raises:
            NotFoundError: ``ref`` does not exist.
        """
        target = self.get(ref).ref
        return [v for v in self.list() if v.manifest.parent == target]

    def references(self, sha256: str) -> int:
        """How many versions use artifact ``sha256``. Raises ConfigError for a bad digest."""
        check_sha256(sha256)
        with self._lock:
            return sum(1 for r in self._rows.values() if r.artifact_sha256 == sha256)

    def close(self) -> None:
        """Nothing to release; present for the ``ModelStore`` contract."""

    def _find(self, ref: ModelRef) -> _Row:
        # Caller holds the lock.
        versions = [v for (n, v) in self._rows if n == ref.name]
        wanted = max(versions, default=None) if ref.version is None else ref.version
        row = None if wanted is None else self._rows.get((ref.name, wanted))
        if row is None:
            known: dict[str, list[int]] = {}
            for n, v in self._rows:
                known.setdefault(n, []).append(v)
            raise not_found(ref, known)
        return row
