"""Content-addressed artifact storage: a model file is stored under the sha256 of its bytes.

A name that is the hash of the content makes a stored file self-verifying (``verify``), makes
storing the same bytes twice a no-op, and lets many model versions share one file. Writes are
atomic (temp file in the store, fsync, rename over, fsync the folder) so a crash leaves either
the whole file or nothing under its final name.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

from edgeloop.core.errors import ConfigError, NotFoundError, StoreError, UntrustedArtifactError

if TYPE_CHECKING:
    from edgeloop.core.settings import Settings

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20
_TMP_PREFIX = ".tmp-"


def check_sha256(sha256: str) -> str:
    """Return ``sha256`` if it is 64 lowercase hex characters.

    Raises:
        ConfigError: for anything else; this is what keeps ``../`` and friends out of paths.
    """
    if not isinstance(sha256, str) or not _SHA256.match(sha256):
        raise ConfigError(
            f"artifact id {sha256!r} is not a sha256 digest; expected 64 lowercase hex characters",
            hint="copy the artifact_sha256 field from `edgeloop registry show NAME:VERSION`",
        )
    return sha256


@dataclass(frozen=True, slots=True)
class ArtifactInfo:
    """The identity of a stored artifact: the sha256 of its bytes and their count."""

    sha256: str
    size_bytes: int

    def __post_init__(self) -> None:
        check_sha256(self.sha256)
        if self.size_bytes < 0:
            raise ConfigError(f"artifact size {self.size_bytes} is negative")

    def to_dict(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "size_bytes": self.size_bytes}


class ArtifactStore(Protocol):
    """Where artifact bytes live. Implementations: local folder (here); object storage later."""

    def put(self, path: Path) -> ArtifactInfo: ...
    def path(self, sha256: str) -> Path: ...
    def exists(self, sha256: str) -> bool: ...
    def delete(self, sha256: str) -> bool: ...
    def verify(self, sha256: str) -> ArtifactInfo: ...


def _fsync_dir(folder: Path) -> None:
    # The rename is only durable once the folder entry itself reached the disk.
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy_hashing(src: BinaryIO, dst: BinaryIO) -> ArtifactInfo:
    digest = hashlib.sha256()
    size = 0
    while chunk := src.read(_CHUNK):
        digest.update(chunk)
        dst.write(chunk)
        size += len(chunk)
    dst.flush()
    os.fsync(dst.fileno())
    return ArtifactInfo(digest.hexdigest(), size)


def hash_file(path: Path) -> ArtifactInfo:
    """Stream ``path`` through sha256 (constant memory, whatever the file size)."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return ArtifactInfo(digest.hexdigest(), size)


class LocalArtifactStore:
    """Artifacts as read-only files ``<root>/<sha[:2]>/<sha>`` on the local disk."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"LocalArtifactStore({str(self.root)!r})"

    def _location(self, sha256: str) -> Path:
        sha = check_sha256(sha256)
        return self.root / sha[:2] / sha

    def put(self, path: Path) -> ArtifactInfo:
        """Store a copy of ``path`` under its sha256; storing the same bytes again is harmless.

        Raises:
            NotFoundError: ``path`` does not exist.
            ConfigError: ``path`` is not a regular file.
            StoreError: the store folder cannot be written.
        """
        source = Path(path)
        if not source.exists():
            raise NotFoundError(
                f"model file {str(source)!r} does not exist", hint="check the path and try again"
            )
        if not source.is_file():
            raise ConfigError(
                f"model file {str(source)!r} is not a regular file",
                hint="give the path of one model file (e.g. model.onnx)",
            )
        try:
            return self._put(source)
        except OSError as exc:
            raise StoreError(
                f"cannot store {str(source)!r} in artifact folder {str(self.root)!r}: {exc}",
                hint="check that the folder exists, is writable and has free space",
            ) from exc

    def _put(self, source: Path) -> ArtifactInfo:
        self.root.mkdir(parents=True, exist_ok=True)
        # The temp file lives in the store itself: os.replace is atomic only on one filesystem.
        tmp = self.root / f"{_TMP_PREFIX}{uuid.uuid4().hex}"
        try:
            with source.open("rb") as src, tmp.open("xb") as dst:
                info = _copy_hashing(src, dst)
            tmp.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
            final = self._location(info.sha256)
            created = not final.parent.exists()
            final.parent.mkdir(exist_ok=True)
            # Replacing an existing copy is deliberate: same name means same bytes, and a copy
            # damaged on disk gets repaired by the next put.
            tmp.replace(final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(final.parent)
        if created:
            _fsync_dir(self.root)
        return info

    def path(self, sha256: str) -> Path:
        """The file holding artifact ``sha256``.

        Raises:
            ConfigError: ``sha256`` is not a sha256 digest.
            NotFoundError: no such artifact is stored.
        """
        location = self._location(sha256)
        if not location.is_file():
            raise NotFoundError(
                f"artifact {sha256} is not in {str(self.root)!r}",
                hint="publish the model again (`edgeloop registry publish FILE --name NAME`)",
            )
        return location

    def exists(self, sha256: str) -> bool:
        """Whether artifact ``sha256`` is stored. Raises ConfigError for a malformed digest."""
        return self._location(sha256).is_file()

    def delete(self, sha256: str) -> bool:
        """Remove artifact ``sha256``; return whether a file was removed (missing is fine).

        Raises:
            ConfigError: ``sha256`` is not a sha256 digest.
            StoreError: the file exists and cannot be removed.
        """
        location = self._location(sha256)
        try:
            location.unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise StoreError(
                f"cannot delete artifact {str(location)!r}: {exc}",
                hint="check the permissions of the artifact folder",
            ) from exc
        _fsync_dir(location.parent)
        return True

    def verify(self, sha256: str) -> ArtifactInfo:
        """Re-hash the stored bytes and check they still match their name.

        Raises:
            ConfigError: ``sha256`` is not a sha256 digest.
            NotFoundError: no such artifact is stored.
            UntrustedArtifactError: the bytes on disk hash to something else (tampering or rot).
        """
        location = self.path(sha256)
        info = hash_file(location)
        if info.sha256 != sha256:
            raise UntrustedArtifactError(
                f"artifact {str(location)!r} hashes to {info.sha256}, expected {sha256}: "
                "its bytes changed after it was stored",
                hint="do not use this file; delete it and publish the model again",
            )
        return info


def open_artifacts(settings: Settings) -> ArtifactStore:
    """The artifact store ``settings`` names: an fsspec URL (with a local read cache under the
    home folder) or the local folder."""
    if settings.artifacts_url:
        from edgeloop.registry.fsspec_artifacts import FsspecArtifactStore

        return FsspecArtifactStore(settings.artifacts_url, settings.home / "artifact-cache")
    return LocalArtifactStore(settings.artifacts_dir)
