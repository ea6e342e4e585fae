"""``Registry``: model versions (a ``ModelStore``) plus their bytes (an ``ArtifactStore``).

The order of writes keeps the two consistent without a distributed transaction: the artifact
goes first (content-addressed, so a leftover copy is harmless and deduplicated), the database
row second (the commit is the moment a version exists). When the row cannot be written, the
artifact is deleted again unless another version uses the same bytes: a failed publish leaves
nothing behind. Removal runs the other way round: row first, then the artifact if unused.
"""

from __future__ import annotations

import builtins
import dataclasses
import tempfile
from pathlib import Path
from types import TracebackType

from edgeloop.core.errors import (
    ConflictError,
    EdgeError,
    NotFoundError,
    UntrustedArtifactError,
)
from edgeloop.core.settings import Settings
from edgeloop.core.types import Manifest, ModelRef
from edgeloop.registry.artifacts import ArtifactStore, open_artifacts
from edgeloop.registry.sql_store import SqlModelStore
from edgeloop.registry.store import ModelStore, ModelVersion, require_version


class Registry:
    """Publish, find, verify and remove model versions."""

    def __init__(self, store: ModelStore, artifacts: ArtifactStore) -> None:
        self.store = store
        self.artifacts = artifacts

    @classmethod
    def open(cls, settings: Settings | None = None) -> Registry:
        """The registry of ``settings`` (default: ``Settings.load()``): its database and folder.

        Raises:
            ConfigError: bad home folder or database URL.
            StoreError: the database cannot be reached.
        """
        settings = (settings if settings is not None else Settings.load()).ensure()
        return cls(SqlModelStore(settings.db_url), open_artifacts(settings))

    def __enter__(self) -> Registry:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self.store.close()

    def publish(
        self,
        model_file: Path,
        manifest: Manifest,
        *,
        version: int | None = None,
        profile: bytes | None = None,
    ) -> ModelVersion:
        """Store ``model_file`` and register it as the next version of ``manifest.name``, or as
        exactly ``version`` (a registry receiving a version published elsewhere keeps its ref).

        A parent given without a version is pinned to the parent's latest version. ``profile``
        (``ReferenceProfile.to_bytes()``) is stored as a second artifact and listed in the
        manifest; a manifest that already lists one needs its bytes stored or given.

        Raises:
            NotFoundError: ``model_file`` or ``manifest.parent`` does not exist.
            ConfigError: the manifest cannot be stored as JSON; the profile does not fit the
                model's input spec.
            DataError: ``profile`` is not a profile.
            ConflictError: ``version`` is not above every number the name ever had.
            StoreError / ConflictError: storing failed; nothing was left behind.
        """
        manifest = self._pin_parent(manifest)
        manifest = self._put_profile(manifest, profile)
        stored = None if profile is None or manifest.profile is None else manifest.profile.sha256
        try:
            info = self.artifacts.put(Path(model_file))
        except BaseException:
            if stored is not None:  # nothing lists the profile just stored: leave nothing
                self._collect_profile(stored)
            raise
        try:
            added = self.store.add(manifest, info.sha256, info.size_bytes, version)
        except BaseException:
            self._collect(info.sha256)
            if stored is not None:
                self._collect_profile(stored)
            raise
        if not self.artifacts.exists(info.sha256):
            # A concurrent failed publish or remove of the same bytes saw no reference (ours
            # was not committed yet) and deleted the file; we still hold the source, so repair.
            again = self.artifacts.put(Path(model_file))
            if again.sha256 != info.sha256:
                raise UntrustedArtifactError(
                    f"{str(model_file)!r} changed while it was being published "
                    f"(sha256 {info.sha256} became {again.sha256})",
                    hint="publish a file that nothing else is writing to",
                )
        return added

    def profile(self, ref: ModelRef) -> tuple[ModelVersion, Path | None]:
        """The version ``ref`` names and the path of its verified profile (None: it has none).

        Raises:
            NotFoundError: no such version, or its profile's bytes are missing.
            UntrustedArtifactError: the profile's bytes no longer match their sha256.
        """
        version = self.store.get(ref)
        record = version.manifest.profile
        if record is None:
            return version, None
        self.artifacts.verify(record.sha256)
        return version, self.artifacts.path(record.sha256)

    def resolve(self, ref: ModelRef) -> tuple[ModelVersion, Path]:
        """The version ``ref`` names and the path of its verified artifact.

        Raises:
            NotFoundError: no such version, or its artifact is missing.
            UntrustedArtifactError: the artifact's bytes no longer match its sha256.
        """
        version = self.store.get(ref)
        self.artifacts.verify(version.artifact_sha256)
        return version, self.artifacts.path(version.artifact_sha256)

    def list(self, name: str | None = None) -> builtins.list[ModelVersion]:
        """All versions, or those of ``name``, ordered by name then version."""
        return self.store.list(name)

    def show(self, ref: ModelRef) -> ModelVersion:
        """The version ``ref`` names (latest when it names none). Raises NotFoundError."""
        return self.store.get(ref)

    def remove(self, ref: ModelRef) -> ModelVersion:
        """Remove version ``ref``; delete its artifact when no other version uses it.

        Raises:
            ConfigError: ``ref`` names no version (removal never guesses "latest").
            NotFoundError: no such version.
            ConflictError: other versions were derived from it (their lineage would break).
        """
        require_version(ref, "removing a model version")
        derived = self.store.children(ref)
        if derived:
            names = ", ".join(str(v.ref) for v in derived)
            raise ConflictError(
                f"cannot remove {str(ref)!r}: it is the parent of {names}",
                hint="remove the derived versions first, newest first",
            )
        removed = self.store.remove(ref)
        self._collect(removed.artifact_sha256)
        if removed.manifest.profile is not None:
            self._collect_profile(removed.manifest.profile.sha256)
        return removed

    def lineage(self, ref: ModelRef) -> builtins.list[ModelVersion]:
        """``ref`` and its ancestors, child first, up to the root (or the first missing parent).

        Raises:
            NotFoundError: ``ref`` itself does not exist.
        """
        chain = [self.store.get(ref)]
        seen = {chain[0].ref}
        while (parent := chain[-1].manifest.parent) is not None:
            try:
                version = self.store.get(parent)
            except NotFoundError:
                break  # removed by a concurrent writer: the known history ends here
            if version.ref in seen:
                break  # a cycle can only come from hand-written rows; never loop on it
            seen.add(version.ref)
            chain.append(version)
        return chain

    def _pin_parent(self, manifest: Manifest) -> Manifest:
        if manifest.parent is None:
            return manifest
        try:
            parent = self.store.get(manifest.parent)
        except NotFoundError as exc:
            raise NotFoundError(
                f"parent {str(manifest.parent)!r} of {manifest.name!r} is not in the registry: "
                f"{exc.message}",
                hint="publish the parent first, or leave the parent out",
            ) from exc
        return dataclasses.replace(manifest, parent=parent.ref)

    def _put_profile(self, manifest: Manifest, profile: bytes | None) -> Manifest:
        """``manifest`` listing ``profile`` (checked and stored), or as is when none is given."""
        from edgeloop.registry.profiles import check_profile

        if profile is None:
            listed = manifest.profile
            if listed is not None and not self.artifacts.exists(listed.sha256):
                # A manifest forwarded without its profile's bytes (another registry's): this
                # version has no profile here, and its manifest says so rather than point at
                # bytes nobody can fetch.
                return dataclasses.replace(manifest, profile=None)
            return manifest
        record = check_profile(profile, manifest)
        with tempfile.TemporaryDirectory(prefix="edgeloop-profile-") as tmp:
            path = Path(tmp) / "model.profile.npz"
            path.write_bytes(profile)
            self.artifacts.put(path)
        return dataclasses.replace(manifest, profile=record)

    def _collect_profile(self, sha256: str) -> bool:
        """Delete profile ``sha256`` unless a version still lists it (or it may be in use)."""
        try:
            if any(
                v.manifest.profile is not None and v.manifest.profile.sha256 == sha256
                for v in self.store.list()
            ):
                return False
            if self.store.references(sha256) > 0:  # the same bytes published as a model
                return False
        except EdgeError:
            return False
        return self.artifacts.delete(sha256)

    def _collect(self, sha256: str) -> bool:
        """Delete artifact ``sha256`` if no version uses it; return whether it was deleted."""
        try:
            if self.store.references(sha256) > 0:
                return False
        except EdgeError:
            # Unknown whether it is used: keeping an unused file is safe, deleting a used one not.
            return False
        return self.artifacts.delete(sha256)
