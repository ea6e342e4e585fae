"""A real TUF repository served over HTTP, plus the forgeries an attacker would serve instead.

For tests of anything that verifies with ``tuf.ngclient`` (the repository's own tests, the edge
agent's attack tests). The repository is the real :class:`UpdateRepository` on a SQLite file;
the server is a stdlib ``ThreadingHTTPServer`` on a free loopback port with the control plane's
paths (``/tuf/metadata/<file>``, ``/tuf/targets/<dir>/<sha256>.<name>``).

An attack is an entry in ``server.overrides``: URL path below ``/tuf/`` -> the bytes served
instead of the genuine ones. The functions below build those bytes with the repository's real
keys (an attacker holding the online keys) or with a fresh key (an attacker holding none):

- :func:`expired_timestamp` - freeze attack;
- :func:`old_metadata` - rollback to an older signed version;
- :func:`mix_and_match` - a genuine older targets file served under the current version's name;
- :func:`forge_targets` - new targets + snapshot + timestamp naming attacker bytes, targets
  signed with a key the root does not trust (a deployment signed with a wrong key);
- :func:`target_url_path` - where a target's bytes are, to tamper with, truncate or extend them.

Usage::

    repo = make_repository(tmp_path)
    repo.add_target("deployments/n1.json", data=b"...")
    with TufServer(repo) as server:
        server.overrides["metadata/timestamp.json"] = expired_timestamp(repo)
        updater = make_updater(server, tmp_path / "client")
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata, MetaFile, TargetFile
from tuf.api.serialization.json import JSONSerializer
from tuf.ngclient import Updater

from edgeloop.core.errors import NotFoundError
from edgeloop.registry.database import connect
from edgeloop.registry.update_repo import Expiry, UpdateRepository

_SERIALIZER = JSONSerializer(compact=True)


def make_repository(folder: Path, expiry: Expiry | None = None) -> UpdateRepository:
    """A fresh repository: SQLite ``folder/repo.db``, keys in ``folder/keys``."""
    folder.mkdir(parents=True, exist_ok=True)
    return UpdateRepository.open(
        connect(f"sqlite:///{folder / 'repo.db'}"), folder / "keys", expiry
    )


class TufServer:
    """Serve ``repo`` over HTTP on a free loopback port; ``overrides`` replace genuine bytes.

    ``token``: when set, target downloads without ``Authorization: Bearer <token>`` get 401
    (metadata stays public, as on the control plane). ``Range: bytes=N-`` is honoured.
    ``requests`` records every path asked for.
    """

    def __init__(self, repo: UpdateRepository, token: str | None = None) -> None:
        self.repo = repo
        self.token = token
        self.overrides: dict[str, bytes] = {}
        self.requests: list[str] = []
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self.port = int(self._httpd.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.metadata_url = f"{self.url}/tuf/metadata/"
        self.targets_url = f"{self.url}/tuf/targets/"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> TufServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def body(self, sub: str) -> bytes | None:
        """What the server answers for ``/tuf/<sub>`` (None: 404)."""
        if sub in self.overrides:
            return self.overrides[sub]
        kind, _, rest = sub.partition("/")
        try:
            if kind == "metadata":
                return self.repo.metadata(rest)
            if kind == "targets":
                folder, _, leaf = rest.rpartition("/")
                sha, _, name = leaf.partition(".")
                found = self.repo.target_bytes(f"{folder}/{name}" if folder else name, sha)
                if found.data is not None:
                    return found.data
                return found.file.read_bytes() if found.file is not None else None
        except NotFoundError:
            return None
        return None

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                if not self.path.startswith("/tuf/"):
                    self._answer(404, b"")
                    return
                sub = self.path[len("/tuf/") :]
                wanted = f"Bearer {server.token}"
                is_target = sub.startswith("targets/") and server.token is not None
                if is_target and self.headers.get("Authorization") != wanted:
                    self._answer(401, b"")
                    return
                body = server.body(sub)
                if body is None:
                    self._answer(404, b"")
                    return
                start = _range_start(self.headers.get("Range"))
                if start:
                    self._answer(206, body[start:], {"Content-Range": f"bytes {start}-"})
                else:
                    self._answer(200, body)

            def _answer(
                self, status: int, body: bytes, extra: dict[str, str] | None = None
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                for key, value in (extra or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        return Handler


def _range_start(header: str | None) -> int:
    if not header or not header.startswith("bytes="):
        return 0
    first = header[len("bytes=") :].split("-", 1)[0]
    return int(first) if first.isdigit() else 0


def make_updater(server: TufServer, folder: Path, root: bytes | None = None) -> Updater:
    """A python-tuf client of ``server`` with its metadata and downloads under ``folder``."""
    (folder / "metadata").mkdir(parents=True, exist_ok=True)
    (folder / "targets").mkdir(parents=True, exist_ok=True)
    return Updater(
        str(folder / "metadata"),
        server.metadata_url,
        str(folder / "targets"),
        server.targets_url,
        bootstrap=root if root is not None else server.repo.root_bytes(),
    )


def target_url_path(repo: UpdateRepository, path: str) -> str:
    """The override key of target ``path``'s current bytes: ``targets/<dir>/<sha256>.<name>``."""
    info = repo.targets()[path]
    folder, _, name = path.rpartition("/")
    leaf = f"{info.hashes['sha256']}.{name}"
    return f"targets/{folder}/{leaf}" if folder else f"targets/{leaf}"


def fresh_signer() -> CryptoSigner:
    """An ed25519 key the repository's root does not trust."""
    return CryptoSigner.generate_ed25519()


def resign(
    repo: UpdateRepository,
    role: str,
    change: Callable[[Any], None],
    signer: CryptoSigner | None = None,
) -> bytes:
    """The current ``role`` metadata changed by ``change(signed)``, signed by ``signer``
    (default: the repository's own key for ``role``)."""
    md = Metadata[Any].from_bytes(repo.metadata(f"{role}.json"))
    change(md.signed)
    md.signatures.clear()
    md.sign(signer if signer is not None else repo.signers[role])
    return md.to_bytes(_SERIALIZER)


def expired_timestamp(repo: UpdateRepository) -> bytes:
    """A newer timestamp, correctly signed, that expired an hour ago (a freeze attack)."""

    def change(signed: Any) -> None:
        signed.version += 1
        signed.expires = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)

    return resign(repo, "timestamp", change)


def old_metadata(repo: UpdateRepository, role: str, version: int) -> bytes:
    """The genuine, validly signed ``role`` file at an older ``version`` (a rollback attack)."""
    return repo.metadata(f"{version}.{role}.json")


def mix_and_match(repo: UpdateRepository, old_targets_version: int) -> dict[str, bytes]:
    """Overrides serving the genuine targets file ``old_targets_version`` under the current
    targets version's name (snapshot says one version, the file says another)."""
    current = repo.versions()["targets"]
    return {f"metadata/{current}.targets.json": old_metadata(repo, "targets", old_targets_version)}


def forge_targets(
    repo: UpdateRepository, changes: dict[str, bytes], targets_signer: CryptoSigner
) -> dict[str, bytes]:
    """Overrides for a complete forged update: targets N+1 listing ``changes`` (signed by
    ``targets_signer``), with snapshot and timestamp N+1 signed by the real online keys, and
    the forged target bytes at their URLs."""
    versions = repo.versions()
    t_next, s_next = versions["targets"] + 1, versions["snapshot"] + 1
    overrides: dict[str, bytes] = {}

    def change_targets(signed: Any) -> None:
        signed.version = t_next
        for path, data in changes.items():
            info = TargetFile.from_data(path, data, ["sha256"])
            signed.targets[path] = info
            folder, _, name = path.rpartition("/")
            prefix = f"targets/{folder}/" if folder else "targets/"
            overrides[f"{prefix}{info.hashes['sha256']}.{name}"] = data

    targets = resign(repo, "targets", change_targets, targets_signer)

    def change_snapshot(signed: Any) -> None:
        signed.version = s_next
        signed.meta["targets.json"] = MetaFile(t_next)

    snapshot = resign(repo, "snapshot", change_snapshot)

    def change_timestamp(signed: Any) -> None:
        signed.version += 1
        signed.snapshot_meta = MetaFile.from_data(s_next, snapshot, ["sha256"])

    overrides[f"metadata/{t_next}.targets.json"] = targets
    overrides[f"metadata/{s_next}.snapshot.json"] = snapshot
    overrides["metadata/timestamp.json"] = resign(repo, "timestamp", change_timestamp)
    return overrides
