"""python-tuf's fetcher over httpx: bearer token, resumable downloads, size cap, deadline.

Every byte the agent trusts passes through :class:`tuf.ngclient.Updater`, which calls this
fetcher and verifies what it returns. Target downloads (URLs under the targets base) are kept
in a ``.part`` file named after the URL; since consistent-snapshot target URLs carry the content
hash, the same URL always means the same bytes, so a later fetch continues the file with
``Range: bytes=N-`` instead of starting over. A part that fails verification is discarded.

With a ``parent`` (a gateway node, ``--parent``), artifact targets can be fetched from the
parent's tier cache (``PARENT/tier/targets/<path>``, :mod:`edgeloop.agent.tier_cache`) into the
same part file: :meth:`HttpxFetcher.prefetch` with ``source=`` the parent URL. Where the bytes
came from is counted in :class:`FetchSources`; what the Updater verifies is the same part
either way.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from tuf.api import exceptions
from tuf.ngclient.fetcher import FetcherInterface

from edgeloop.core.tls import client_verify

_CHUNK = 64 * 1024
NODE_HEADER = "X-Edgeloop-Node"  # the child's node id at its parent (edgeloop.agent.tier_auth)
PARENT_CONNECT_S = 2.0  # a dead parent is given up on quickly; the control plane is next
# The parent answers a miss only once its own upstream download is whole and hash-checked, so
# its first byte may take a while; a parent silent for longer is given up on.
PARENT_READ_S = 60.0


@dataclass(slots=True)
class FetchSources:
    """Where this node's artifacts came from (``GET /agent/status`` -> ``tier.fetch``)."""

    parent: int = 0  # artifacts whose bytes came from the parent (and passed the hash check)
    control: int = 0  # artifacts downloaded from the control plane
    parent_failed: int = 0  # the parent was unreachable or answered an error
    parent_rejected: int = 0  # the parent's bytes did not match the signed length and hashes
    parent_bytes: int = 0
    control_bytes: int = 0
    last_fallback: str | None = None  # why the last artifact did not come from the parent

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


class HttpxFetcher(FetcherInterface):
    """Fetch with ``token`` as bearer; parts of target downloads live in ``part_dir``.

    ``deadline_s`` bounds one whole download (connect to last byte), checked at every network
    read; ``timeout_s`` bounds one read, so a silent server is cut by that. ``max_length`` of
    the current download (set by :meth:`download_file` and :meth:`prefetch`) caps what is
    read, so an endless answer stops at the signed length + 1.
    """

    def __init__(
        self,
        token: str,
        part_dir: Path,
        targets_base: str,
        *,
        deadline_s: float = 300.0,
        timeout_s: float = 10.0,
        parent: str | None = None,
        node_id: str | None = None,
        sources: FetchSources | None = None,
    ) -> None:
        self.token = token
        self.parent = parent.rstrip("/") if parent else None
        self.node_id = node_id
        self.sources = sources if sources is not None else FetchSources()
        self.timeout_s = timeout_s
        self.part_dir = part_dir
        self.targets_base = targets_base
        self.deadline_s = deadline_s
        self.client = httpx.Client(timeout=timeout_s, headers={"Authorization": f"Bearer {token}"},
                                   verify=client_verify(control=parent is None))  # fmt: skip
        self.max_length: int | None = None

    def close(self) -> None:
        self.client.close()

    def part_path(self, url: str) -> Path:
        return self.part_dir / (hashlib.sha256(url.encode()).hexdigest()[:32] + ".part")

    def discard_parts(self) -> None:
        """Remove every partial download (after a verification failure)."""
        for part in self.part_dir.glob("*.part"):
            part.unlink(missing_ok=True)

    def download_file(self, url: str, max_length: int):  # type: ignore[no-untyped-def]
        self.max_length = max_length
        return super().download_file(url, max_length)

    def parent_url(self, url: str) -> str | None:
        """Where the parent's tier cache serves target ``url``; None: ask the control plane
        (no parent, not a target, or a per-node ``deployments/`` document)."""
        if self.parent is None or not url.startswith(self.targets_base):
            return None
        path = url[len(self.targets_base) :]
        return None if path.startswith("deployments/") else f"{self.parent}/tier/targets/{path}"

    def prefetch(self, url: str, max_length: int, source: str | None = None) -> int:
        """Download ``url`` into its part file (continuing it); the bytes now held.

        ``source``: another URL with the same bytes (the parent's tier cache) to read from.

        Raises:
            DownloadError and subclasses, as :meth:`fetch`.
        """
        self.max_length = max_length
        part = self.part_path(url)
        try:
            for _ in self._network(url, part, source=source):
                pass
        except exceptions.DownloadError:
            raise
        except Exception as exc:  # httpx's network errors: the part stays, to be continued
            raise exceptions.DownloadError(f"Failed to download {source or url}: {exc}") from exc
        return part.stat().st_size if part.exists() else 0

    def _fetch(self, url: str) -> Iterator[bytes]:
        if not url.startswith(self.targets_base):
            return self._plain(url)
        part = self.part_path(url)
        return self._resumed(url, part)

    def _plain(self, url: str) -> Iterator[bytes]:
        deadline = time.monotonic() + self.deadline_s
        with self.client.stream("GET", url) as response:
            _check_status(url, response)
            received = 0
            for chunk in response.iter_bytes():
                received += len(chunk)
                _check_limits(url, received, self.max_length, deadline)
                yield chunk

    def _resumed(self, url: str, part: Path) -> Iterator[bytes]:
        have = part.stat().st_size if part.exists() else 0
        if self.max_length is not None and have >= self.max_length:
            yield from _read_file(part)  # complete (as far as its length goes): verify it
            return
        yield from self._network(url, part, replay=True)

    def _network(
        self, url: str, part: Path, replay: bool = False, source: str | None = None
    ) -> Iterator[bytes]:
        """Continue ``part`` from the network (``source``, else ``url``); with ``replay`` first
        yield what it holds."""
        deadline = time.monotonic() + self.deadline_s
        have = part.stat().st_size if part.exists() else 0
        if self.max_length is not None and have >= self.max_length:
            return
        headers = {"Range": f"bytes={have}-"} if have else {}
        timeout = httpx.Timeout(self.timeout_s)
        if source is not None:  # the parent: quick to give up on, slow to first byte on a miss
            headers[NODE_HEADER] = self.node_id or ""
            timeout = httpx.Timeout(min(PARENT_READ_S, self.deadline_s), connect=PARENT_CONNECT_S)
            url = source
        with self.client.stream("GET", url, headers=headers, timeout=timeout) as response:
            if response.status_code == 416:  # the part is not a prefix the server knows
                part.unlink(missing_ok=True)
                raise exceptions.DownloadError(f"{url}: partial download refused; starting over")
            _check_status(url, response)
            if response.status_code != 206 or not _starts_at(response, have):
                have = 0  # the server sent the whole file: drop the part
            mode = "ab" if have else "wb"
            if replay and have:
                yield from _read_file(part)
            with part.open(mode) as out:
                received = have
                for chunk in response.iter_bytes():
                    received += len(chunk)
                    _check_limits(url, received, self.max_length, deadline)
                    out.write(chunk)
                    out.flush()
                    yield chunk


def _starts_at(response: httpx.Response, offset: int) -> bool:
    """Whether a 206 answer's ``Content-Range: bytes A-B/N`` starts at ``offset``."""
    value = response.headers.get("content-range", "")
    unit, _, rest = value.partition(" ")
    start = rest.partition("-")[0]
    return unit == "bytes" and start.isdigit() and int(start) == offset


def _read_file(path: Path) -> Iterator[bytes]:
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            yield chunk


def _check_status(url: str, response: httpx.Response) -> None:
    if response.status_code >= 400:
        raise exceptions.DownloadHTTPError(
            f"GET {url} answered {response.status_code}", response.status_code
        )


def _check_limits(url: str, received: int, max_length: int | None, deadline: float) -> None:
    if max_length is not None and received > max_length:
        raise exceptions.DownloadLengthMismatchError(
            f"{url} sent more than the signed {max_length} bytes"
        )
    if time.monotonic() > deadline:
        raise exceptions.SlowRetrievalError(f"{url} did not finish before the download deadline")
