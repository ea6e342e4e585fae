"""The agent's TUF client: python-tuf's ``ngclient.Updater`` and nothing home-made.

One :class:`TufSession` per reconcile pass (an Updater refreshes once in its life): it refreshes
the top-level metadata (root rotation, timestamp, snapshot, targets: signatures, thresholds,
versions never going back, expiry), then fetches targets through the Updater, which checks
their length and hashes against the signed targets metadata. python-tuf's errors are translated
here into the agent's: a repository that fails a check is an :class:`UntrustedArtifactError`,
one that cannot be reached a :class:`TransportError`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from tuf.api import exceptions
from tuf.api.metadata import TargetFile
from tuf.ngclient import Updater

from edgeloop.agent.deployment import ModelSpec
from edgeloop.agent.fetcher import HttpxFetcher
from edgeloop.agent.home import AgentHome
from edgeloop.core.errors import EdgeError, NotFoundError, TransportError, UntrustedArtifactError

log = logging.getLogger(__name__)


def translate(exc: Exception, what: str) -> EdgeError:
    """python-tuf's error as the agent's, naming what was being fetched."""
    name = type(exc).__name__
    if isinstance(exc, exceptions.DownloadLengthMismatchError):
        return UntrustedArtifactError(
            f"{what}: the repository sent more bytes than signed ({exc})",
            hint="the artifact or the server is compromised; the active model keeps serving",
        )
    if isinstance(exc, exceptions.DownloadHTTPError) and exc.status_code in (401, 403):
        return TransportError(
            f"{what}: the repository refused this node's token ({exc.status_code})",
            hint="check the node's enrollment (HOME/agent/identity.json)",
        )
    if isinstance(exc, exceptions.DownloadError):
        return TransportError(f"{what}: download failed ({name}: {exc})")
    if isinstance(exc, exceptions.RepositoryError):
        return UntrustedArtifactError(
            f"{what}: TUF verification failed ({name}: {exc})",
            hint="the repository's metadata or target failed a check; nothing was changed",
        )
    return TransportError(f"{what}: {name}: {exc}")


class TufSession:
    """One refresh of the repository and the targets fetched under it."""

    def __init__(
        self, home: AgentHome, metadata_url: str, targets_url: str, fetcher: HttpxFetcher
    ) -> None:
        self.home = home
        self.fetcher = fetcher
        self.targets_url = targets_url if targets_url.endswith("/") else targets_url + "/"
        root = home.tuf_root.read_bytes()
        try:
            self.updater = Updater(
                metadata_dir=str(home.tuf_metadata),
                metadata_base_url=metadata_url,
                target_dir=str(home.downloads),
                target_base_url=self.targets_url,
                fetcher=fetcher,
                bootstrap=root,
            )
            self.updater.refresh()
        except (exceptions.RepositoryError, exceptions.DownloadError) as exc:
            raise translate(exc, "TUF refresh") from exc
        except ValueError as exc:  # the bootstrap root is not TUF metadata
            raise UntrustedArtifactError(
                f"the trusted root {str(home.tuf_root)!r} is not valid TUF root metadata: {exc}",
                hint="re-enroll, or pass --tuf-root with the control plane's root.json",
            ) from exc

    def info(self, target: str) -> TargetFile:
        """The signed facts about ``target``.

        Raises:
            NotFoundError: the signed targets do not name it.
            UntrustedArtifactError, TransportError: as the refresh.
        """
        try:
            info = self.updater.get_targetinfo(target)
        except (exceptions.RepositoryError, exceptions.DownloadError) as exc:
            raise translate(exc, target) from exc
        if info is None:
            raise NotFoundError(f"the signed targets name no {target!r}")
        return info

    def url(self, info: TargetFile) -> str:
        """The consistent-snapshot URL ngclient fetches ``info`` from (hash-prefixed name)."""
        directory, sep, base = info.path.rpartition("/")
        digest = next(iter(info.hashes.values()))
        return f"{self.targets_url}{directory}{sep}{digest}.{base}"

    def document(self, target: str) -> bytes:
        """A small target (a deployment document), downloaded and verified by the Updater."""
        info = self.info(target)
        path = self.home.downloads / "deployment.json"
        try:
            self.updater.download_target(info, filepath=str(path))
        except (exceptions.RepositoryError, exceptions.DownloadError) as exc:
            raise translate(exc, target) from exc
        finally:
            self.fetcher.part_path(self.url(info)).unlink(missing_ok=True)
        return path.read_bytes()

    def matching(self, spec: ModelSpec) -> TargetFile:
        """The signed facts of ``spec``'s artifact, checked against what the document says.

        Raises:
            UntrustedArtifactError: the document's length or sha256 differ from the targets'.
        """
        info = self.info(spec.target)
        signed = info.hashes.get("sha256")
        if info.length != spec.length or signed != spec.sha256:
            raise UntrustedArtifactError(
                f"{spec.target}: the deployment says {spec.length} B sha256 {spec.sha256[:12]}, "
                f"the signed targets say {info.length} B sha256 {str(signed)[:12]}",
                hint="the deployment and the targets metadata disagree; re-publish the deployment",
            )
        return info

    def download(self, info: TargetFile) -> int:
        """DOWNLOAD: fetch ``info``'s bytes into their part file (continuing it); bytes held.

        With a parent, from the parent first: its bytes are kept only if they already match the
        signed length and hashes (python-tuf's ``TargetFile.verify_length_and_hashes``); else
        they are dropped, counted, and the control plane is asked (VERIFY checks again).
        """
        url = self.url(info)
        sources = self.fetcher.sources
        if (parent := self.fetcher.parent_url(url)) is not None:
            why = self._from_parent(info, url, parent)
            if why is None:
                sources.parent += 1
                sources.parent_bytes += info.length
                return info.length
            sources.last_fallback = why
            log.warning("artifact %s not taken from the parent: %s", info.path, why)
        try:
            held = self.fetcher.prefetch(url, info.length)
        except exceptions.DownloadError as exc:
            if isinstance(exc, exceptions.DownloadLengthMismatchError):
                self.fetcher.discard_parts()
            raise translate(exc, info.path) from exc
        sources.control += 1
        sources.control_bytes += held
        return held

    def _from_parent(self, info: TargetFile, url: str, parent: str) -> str | None:
        """Fetch ``info`` from the parent into its part; None when the bytes are the signed
        ones, else why not (the part is then dropped, the failure counted)."""
        part = self.fetcher.part_path(url)
        try:
            self.fetcher.prefetch(url, info.length, source=parent)
        except exceptions.DownloadError as exc:
            self.fetcher.sources.parent_failed += 1
            # Unchecked bytes of a parent that failed half-way are not continued from the
            # control plane: a bad prefix would fail VERIFY and fail the revision.
            part.unlink(missing_ok=True)
            return f"the parent failed: {type(exc).__name__}: {exc}"
        try:
            with part.open("rb") as fh:
                info.verify_length_and_hashes(fh)
        except (exceptions.LengthOrHashMismatchError, OSError) as exc:
            self.fetcher.sources.parent_rejected += 1
            part.unlink(missing_ok=True)
            return f"the parent's bytes failed the signed length and hashes: {exc}"
        return None

    def verify(self, info: TargetFile) -> Path:
        """VERIFY: the Updater checks the downloaded bytes' length and hashes, writes the file.

        Raises:
            UntrustedArtifactError: they do not match the signed targets (the part is dropped).
        """
        path = self.home.downloads / f"{info.hashes['sha256']}.artifact"
        try:
            self.updater.download_target(info, filepath=str(path))
        except (exceptions.RepositoryError, exceptions.DownloadError) as exc:
            self.fetcher.discard_parts()
            path.unlink(missing_ok=True)
            raise translate(exc, info.path) from exc
        self.fetcher.part_path(self.url(info)).unlink(missing_ok=True)
        return path


def store_root(home: AgentHome, root: bytes, source: str) -> None:
    """Keep ``root`` as the trust anchor, once: a stored root is never replaced silently.

    ``source`` says where it came from, for the log (``--tuf-root FILE`` or trust on first use).
    """
    from edgeloop.agent.durable import write_durable

    if home.tuf_root.exists():
        return
    write_durable(home.tuf_root, root)
    log.warning("TUF trust anchor stored from %s", source)


def describe_root(root: bytes) -> dict[str, Any]:
    """Version and expiry of a root, for logs."""
    import json

    signed = json.loads(root).get("signed", {})
    return {"version": signed.get("version"), "expires": signed.get("expires")}
