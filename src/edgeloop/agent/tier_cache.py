"""A parent node's cache of artifact targets for its children (``--serve-children``).

A child asks ``GET /tier/targets/artifacts/<sha256>.<name>`` (the consistent-snapshot path it
would ask the control plane for). On a miss the parent downloads the target once from the control
plane with its own node token into ``HOME/agent/tier-cache/`` (a ``.part`` file, then a rename),
and keeps it only if its sha256 is the one the name carries: a corrupted or hostile upstream
never poisons the cache. Concurrent requests for the same missing target wait on that one
download. The parent trusts nothing else about the bytes; each child still verifies them with
its own python-tuf Updater against the signed targets (:mod:`edgeloop.agent.tuf_client`).

Only ``artifacts/`` targets are cached: ``deployments/<node>.json`` documents are per node and
come from the control plane. Over ``max_bytes`` the least recently served files are removed.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from edgeloop.core.errors import ConfigError, NotFoundError, TransportError, UntrustedArtifactError
from edgeloop.core.tls import client_verify

_LEAF = re.compile(r"^[0-9a-f]{64}\.[A-Za-z0-9][A-Za-z0-9._+-]{0,199}$")
_CHUNK = 256 * 1024
Upstream = Callable[[], tuple[str, str] | None]  # (targets base URL, node token) once enrolled


def check_path(path: str) -> str:
    """``path`` if it is ``artifacts/<sha256>.<name>`` (pure); the cache's only accepted form.

    Raises:
        ConfigError (400): traversal, an absolute or empty path, another folder than
            ``artifacts`` (``deployments/`` documents are per node), or a leaf that is not
            ``<64 hex>.<name>``.
    """
    folder, _, leaf = path.partition("/")
    if folder == "deployments":
        raise ConfigError(
            f"target {path[:120]!r} is a per-node deployment document; the tier cache serves "
            "only artifacts/ targets",
            hint="fetch deployments/<node>.json from the control plane",
        )
    if folder != "artifacts" or "/" in leaf or not _LEAF.match(leaf) or ".." in leaf:
        raise ConfigError(
            f"target path {path[:120]!r} is not artifacts/<sha256>.<name> "
            "(no '..', no sub-folders, 64 lower-case hex digits)",
            hint="ask for the consistent-snapshot path the signed targets name",
        )
    return path


@dataclass(slots=True)
class CacheCounts:
    """What the cache did since the process started (``GET /agent/status`` -> ``tier.cache``)."""

    hits: int = 0  # answered from a file already cached
    coalesced: int = 0  # waited on another request's upstream download
    upstream_downloads: int = 0  # downloads from the control plane that were kept
    upstream_bytes: int = 0
    upstream_failed: int = 0  # unreachable, an error status, or bytes over the cap
    upstream_rejected: int = 0  # bytes whose sha256 was not the one the name carries
    served: int = 0  # answers with a file (200 or 206)
    refused: int = 0  # bad paths and children that failed authentication
    evicted: int = 0

    def to_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


class TierCache:
    """The cache folder ``root``; ``upstream()`` gives where and how to download a miss."""

    def __init__(
        self,
        root: Path,
        upstream: Upstream,
        *,
        max_bytes: int = 2 << 30,
        timeout_s: float = 10.0,
        deadline_s: float = 600.0,
    ) -> None:
        self.root = root
        self.upstream = upstream
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.deadline_s = deadline_s
        self.counts = CacheCounts()
        self._inflight: dict[str, asyncio.Future[Path]] = {}
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob("*.part"):  # an interrupted download of an earlier process
            stale.unlink(missing_ok=True)

    def file(self, path: str) -> Path:
        return self.root / check_path(path).partition("/")[2]

    async def get(self, path: str) -> Path:
        """The cached file of ``path``, downloading it once on a miss.

        Raises:
            ConfigError: a path that is not ``artifacts/<sha256>.<name>``.
            NotFoundError: the control plane has no such target.
            TransportError: the parent is not enrolled yet, or the control plane is unreachable,
                refused the parent's token or sent more than the cap.
            UntrustedArtifactError: the control plane's bytes do not hash to the name.
        """
        file = self.file(path)
        if file.exists():
            self.counts.hits += 1
            os.utime(file)  # recently served: evicted last
            return file
        pending = self._inflight.get(path)
        if pending is not None:
            self.counts.coalesced += 1
            return await asyncio.shield(pending)
        future: asyncio.Future[Path] = asyncio.get_running_loop().create_future()
        self._inflight[path] = future
        try:
            result = await self._download(path, file)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning without waiters
            raise
        else:
            future.set_result(result)
            return result
        finally:
            del self._inflight[path]

    async def _download(self, path: str, file: Path) -> Path:
        where = self.upstream()
        if where is None:
            raise TransportError(
                "this parent is not enrolled yet; it cannot download for its children",
                hint="the child falls back to the control plane; retry once the parent enrolled",
            )
        base, token = where
        part = file.with_name(file.name + ".part")
        try:
            digest, size = await self._stream(base + path, token, part)
        except BaseException:
            part.unlink(missing_ok=True)
            self.counts.upstream_failed += 1
            raise
        expected = file.name.partition(".")[0]
        if digest != expected:
            part.unlink(missing_ok=True)
            self.counts.upstream_rejected += 1
            raise UntrustedArtifactError(
                f"the control plane sent {size} B for {path} whose sha256 is {digest[:16]}..., "
                f"not the {expected[:16]}... the name carries; nothing was cached",
                hint="the uplink or the control plane's store is corrupt; the child falls back",
            )
        part.replace(file)  # whole and verified, or not there at all
        self.counts.upstream_downloads += 1
        self.counts.upstream_bytes += size
        self._evict(keep=file)
        return file

    async def _stream(self, url: str, token: str, part: Path) -> tuple[str, int]:
        """Download ``url`` into ``part``; its sha256 and size."""
        sha = hashlib.sha256()
        size = 0
        deadline = time.monotonic() + self.deadline_s
        headers = {"Authorization": f"Bearer {token}"}
        try:
            async with (
                httpx.AsyncClient(timeout=self.timeout_s, verify=client_verify()) as client,
                client.stream("GET", url, headers=headers) as response,
            ):
                if response.status_code == 404:
                    raise NotFoundError(f"the control plane has no target {url}")
                if response.status_code != 200:
                    raise TransportError(f"the control plane answered {response.status_code} "
                                         f"for {url}")  # fmt: skip
                with part.open("wb") as out:
                    async for chunk in response.aiter_bytes(_CHUNK):
                        size += len(chunk)
                        if size > self.max_bytes or time.monotonic() > deadline:
                            raise TransportError(
                                f"{url}: over the cache's {self.max_bytes} B or its "
                                f"{self.deadline_s:g} s deadline"
                            )
                        sha.update(chunk)
                        await asyncio.to_thread(out.write, chunk)
                    out.flush()
                    os.fsync(out.fileno())
        except httpx.HTTPError as exc:
            raise TransportError(
                f"the control plane did not answer for {url}: {type(exc).__name__}: {exc}"
            ) from exc
        return sha.hexdigest(), size

    def _evict(self, keep: Path) -> None:
        """Remove the least recently served files until the cache holds at most max_bytes."""
        files = [(f.stat().st_mtime, f.stat().st_size, f) for f in self._files()]
        total = sum(size for _, size, _ in files)
        for _, size, file in sorted(files, key=lambda item: item[0]):
            if total <= self.max_bytes:
                break
            if file == keep:
                continue
            file.unlink(missing_ok=True)
            total -= size
            self.counts.evicted += 1

    def _files(self) -> list[Path]:
        return [f for f in self.root.iterdir() if f.is_file() and not f.name.endswith(".part")]

    def status(self) -> dict[str, Any]:
        files = self._files()
        return {
            **self.counts.to_dict(),
            "files": len(files),
            "bytes": sum(f.stat().st_size for f in files),
            "max_bytes": self.max_bytes,
            "downloading": len(self._inflight),
        }
