"""Artifacts in any fsspec filesystem (S3, GCS, Azure, SFTP, ``file://``, ...), cached locally.

The layout is the local store's, ``<url>/<sha[:2]>/<sha>``, so a folder written by
:class:`LocalArtifactStore` can be copied to a bucket as it is. An upload goes to a temporary name
beside its final one and is then moved; a reader never sees a partial object under a final name
(object stores write whole objects; file systems rename). Readers get local files: ``path()``
downloads an artifact once into the cache folder, checks its sha256 and renames it into place, so
the control plane serves and the agent self-tests bytes that were verified on this machine.
Replicas of the control plane share one bucket and keep a cache each.
"""

from __future__ import annotations

import contextlib
import stat
import uuid
from pathlib import Path
from typing import Any

from edgeloop.core.errors import (
    ConfigError,
    NotFoundError,
    StoreError,
    UntrustedArtifactError,
    require,
)
from edgeloop.registry.artifacts import (
    ArtifactInfo,
    LocalArtifactStore,
    check_sha256,
    hash_file,
)

EXTRA = "artifacts"


class FsspecArtifactStore:
    """Content-addressed artifacts under an fsspec URL, with a verified local read cache."""

    def __init__(self, url: str, cache_dir: Path, **storage_options: Any) -> None:
        fsspec = require("fsspec", EXTRA, "an artifact store at a URL")
        try:
            self.fs, root = fsspec.core.url_to_fs(url, **storage_options)
        except (ValueError, ImportError) as exc:
            raise ConfigError(
                f"artifact store URL {url!r} cannot be opened: {exc}",
                hint="use a URL fsspec knows (s3://bucket/path needs s3fs, file:///path, ...)",
            ) from exc
        self.url = url
        self.root = str(root).rstrip("/")
        self.cache = LocalArtifactStore(cache_dir)

    def __repr__(self) -> str:
        return f"FsspecArtifactStore({self.url!r})"

    def _location(self, sha256: str) -> str:
        sha = check_sha256(sha256)
        return f"{self.root}/{sha[:2]}/{sha}"

    def put(self, path: Path) -> ArtifactInfo:
        """Upload ``path`` under its sha256 (kept in the cache too); same bytes again is harmless.

        Raises:
            NotFoundError, ConfigError: as :meth:`LocalArtifactStore.put`.
            StoreError: the upload failed (the store is left without a partial object).
        """
        info = self.cache.put(path)  # hashes, checks the file, and fills the cache
        final = self._location(info.sha256)
        tmp = f"{self.root}/.tmp-{uuid.uuid4().hex}"
        try:
            self.fs.makedirs(final.rsplit("/", 1)[0], exist_ok=True)
            self.fs.put_file(str(self.cache.path(info.sha256)), tmp)
            self.fs.mv(tmp, final)
        except OSError as exc:
            self._forget(tmp)
            raise StoreError(
                f"cannot upload {str(path)!r} to {self.url!r}: {exc}",
                hint="check the URL, the credentials and that the store is writable",
            ) from exc
        return info

    def path(self, sha256: str) -> Path:
        """A local, verified copy of artifact ``sha256`` (downloaded once into the cache).

        Raises:
            ConfigError: not a sha256 digest.
            NotFoundError: the store does not hold it.
            UntrustedArtifactError: the stored bytes hash to something else.
            StoreError: the download failed.
        """
        if self.cache.exists(sha256):
            return self.cache.path(sha256)
        location = self._location(sha256)
        part = self.cache.root / f".download-{uuid.uuid4().hex}"
        self.cache.root.mkdir(parents=True, exist_ok=True)
        try:
            self.fs.get_file(location, str(part))
        except FileNotFoundError:
            part.unlink(missing_ok=True)
            raise NotFoundError(
                f"artifact {sha256} is not in {self.url!r}",
                hint="publish the model again (`edgeloop registry publish FILE --name NAME`)",
            ) from None
        except OSError as exc:
            part.unlink(missing_ok=True)
            raise StoreError(f"cannot download artifact {sha256} from {self.url!r}: {exc}") from exc
        try:
            info = hash_file(part)
            if info.sha256 != sha256:
                raise UntrustedArtifactError(
                    f"artifact {location!r} in {self.url!r} hashes to {info.sha256}, expected "
                    f"{sha256}: its bytes changed after it was stored",
                    hint="do not use it; delete it and publish the model again",
                )
            part.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
            final = self.cache.root / sha256[:2] / sha256
            final.parent.mkdir(exist_ok=True)
            part.replace(final)
        finally:
            part.unlink(missing_ok=True)
        return self.cache.path(sha256)

    def exists(self, sha256: str) -> bool:
        """Whether the store holds artifact ``sha256`` (the cache alone does not count)."""
        return bool(self.fs.exists(self._location(sha256)))

    def delete(self, sha256: str) -> bool:
        """Remove artifact ``sha256`` from the store and the cache; whether the store held it.

        Raises:
            ConfigError: not a sha256 digest.
            StoreError: it exists and cannot be removed.
        """
        self.cache.delete(sha256)
        location = self._location(sha256)
        try:
            self.fs.rm_file(location)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise StoreError(f"cannot delete artifact {location!r} in {self.url!r}: {exc}") from exc
        return True

    def verify(self, sha256: str) -> ArtifactInfo:
        """Download the stored bytes afresh and check they hash to their name.

        Raises:
            NotFoundError, UntrustedArtifactError, StoreError: as :meth:`path`.
        """
        self.cache.delete(sha256)
        return hash_file(self.path(sha256))

    def _forget(self, location: str) -> None:
        # Nothing was written, or it is gone already: either way no partial object remains.
        with contextlib.suppress(OSError):
            self.fs.rm_file(location)
