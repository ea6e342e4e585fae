"""``UpdateRepository``: a TUF repository (python-tuf's ``tuf.api.metadata``) in the database.

Roles root, targets, snapshot and timestamp, one ed25519 key each (:mod:`.tuf_keys`),
``consistent_snapshot: true``; every signed file is a row of ``tuf_metadata``
(:mod:`.tuf_store`), so control-plane replicas on one database serve one repository.

Every change of the target set is one transaction: it locks the heads, reads the current
targets, applies the change and signs new targets, snapshot and timestamp versions (each
current version + 1). Concurrent publishers therefore queue up on the lock instead of signing
two different files with the same version, which a TUF client would take for an attack.

Clients (the edge agent) verify with ``tuf.ngclient.Updater``; nothing here verifies for them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import (
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

from edgeloop.core.errors import ConfigError, NotFoundError
from edgeloop.registry import tuf_keys, tuf_store
from edgeloop.registry.artifacts import hash_file
from edgeloop.registry.database import Database, connect

DAY_S = 86400
_SERIALIZER = JSONSerializer(compact=True)
_FILENAME = re.compile(r"^(?:([1-9][0-9]{0,9})\.)?(root|targets|snapshot|timestamp)\.json$")
_TARGET_PATH = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}(/[A-Za-z0-9][A-Za-z0-9._-]{0,127}){0,7}$"
)
# A root is re-signed when it has less than this left (clients need a valid root to update).
_ROOT_MARGIN_S = 30 * DAY_S


@dataclass(frozen=True, slots=True)
class Expiry:
    """How long each role's metadata stays valid after signing, in seconds.

    Defaults follow the TUF specification's advice: a short timestamp (freeze attacks last at
    most a day), a week for snapshot and targets, a year for the root.
    """

    root_s: int = 365 * DAY_S
    targets_s: int = 7 * DAY_S
    snapshot_s: int = 7 * DAY_S
    timestamp_s: int = DAY_S

    def __post_init__(self) -> None:
        for name in ("root_s", "targets_s", "snapshot_s", "timestamp_s"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 2:
                raise ConfigError(
                    f"TUF expiry {name}={value!r} is not valid; expected whole seconds >= 2",
                    hint="timestamps expire in a day by default (--timestamp-expiry-s)",
                )

    def seconds(self, role: str) -> int:
        return int(getattr(self, f"{role}_s"))


@dataclass(frozen=True, slots=True)
class Published:
    """The versions a publish signed."""

    targets: int
    snapshot: int
    timestamp: int


@dataclass(frozen=True, slots=True)
class TargetBytes:
    """Where a target's bytes are: ``data`` inline, or ``file`` on disk; ``length`` signed."""

    length: int
    data: bytes | None
    file: Path | None


@dataclass(frozen=True, slots=True)
class _Blob:
    path: str
    info: TargetFile
    data: bytes | None
    file: str | None


@dataclass(frozen=True, slots=True)
class StagedChanges:
    """Target changes checked and hashed, ready for :meth:`UpdateRepository.publish_in`."""

    blobs: tuple[_Blob, ...]
    removed: tuple[str, ...]


def check_target_path(path: str) -> str:
    """Return ``path`` if it is a safe relative target path (``dir/name``, no ``..``).

    Raises:
        ConfigError: anything else.
    """
    if not isinstance(path, str) or not _TARGET_PATH.match(path) or ".." in path:
        raise ConfigError(
            f"target path {path!r} is not valid",
            hint="use relative paths of letters, digits, '.', '_', '-' such as "
            "'artifacts/digits-1.onnx' or 'deployments/<node_id>.json'",
        )
    return path


class UpdateRepository:
    """Publish targets and serve signed metadata; state in the database, keys in a folder."""

    def __init__(self, db: Database, signers: Mapping[str, CryptoSigner], expiry: Expiry) -> None:
        self.db = db
        self.signers = dict(signers)
        self.expiry = expiry

    @classmethod
    def open(
        cls, db: Database | str, keys_dir: Path, expiry: Expiry | None = None
    ) -> UpdateRepository:
        """Open the repository in ``db``, creating keys and the first metadata if missing.

        Raises:
            ConfigError: bad URL or keys folder, or keys that do not match the stored root.
            StoreError: the database cannot be reached.
        """
        database = connect(db) if isinstance(db, str) else db
        tuf_store.create_tables(database)
        with tuf_keys.keys_lock(Path(keys_dir)):
            signers = tuf_keys.load_or_create(Path(keys_dir))
        repo = cls(database, signers, expiry if expiry is not None else Expiry())
        tuf_store.retrying(database, "creating the update repository", repo._initialize)
        return repo

    # --- reading -----------------------------------------------------------------------------

    def metadata(self, filename: str) -> bytes:
        """The bytes of ``N.root.json``, ``N.targets.json``, ``N.snapshot.json`` or
        ``timestamp.json`` (an unversioned name means the current version).

        Raises:
            NotFoundError: no such file (a TUF client reads that as "no newer root").
        """
        match = _FILENAME.match(filename)
        if match is None:
            raise NotFoundError(
                f"{filename!r} is not a metadata file of this repository",
                hint="ask for N.root.json, N.targets.json, N.snapshot.json or timestamp.json",
            )
        version_text, role = match.groups()

        def run() -> bytes | None:
            with self.db.engine.connect() as conn:
                version = (
                    int(version_text) if version_text else tuf_store.heads(conn, lock=False)[role]
                )
                return tuf_store.read(conn, role, version)

        found = tuf_store.guarded(self.db, f"reading {filename}", run)
        if found is None:
            raise NotFoundError(f"metadata {filename!r} does not exist in this repository")
        return found

    def root_bytes(self) -> bytes:
        """The current root metadata (what a client bootstraps its trust from)."""
        return self.metadata("root.json")

    def versions(self) -> dict[str, int]:
        """The current version of each role."""

        def run() -> dict[str, int]:
            with self.db.engine.connect() as conn:
                return tuf_store.heads(conn, lock=False)

        return tuf_store.guarded(self.db, "reading metadata versions", run)

    def targets(self) -> dict[str, TargetFile]:
        """The current signed targets, by path."""
        md = Metadata[Targets].from_bytes(self.metadata("targets.json"))
        return dict(md.signed.targets)

    def target_bytes(self, path: str, sha256: str) -> TargetBytes:
        """Where the bytes of target ``path`` whose sha256 is ``sha256`` are.

        Any version of a target ever published is found (a client in the middle of an update
        may ask for the one just replaced).

        Raises:
            NotFoundError: no target ``path`` with that digest was published.
        """
        check_target_path(path)

        def run() -> Any:
            with self.db.engine.connect() as conn:
                return tuf_store.get_blob(conn, path, sha256)

        row = tuf_store.guarded(self.db, f"reading target {path}", run)
        if row is None:
            raise NotFoundError(f"target {path!r} with sha256 {sha256!r} was never published")
        data = None if row.data is None else bytes(row.data)
        return TargetBytes(int(row.length), data, None if row.file is None else Path(row.file))

    # --- publishing --------------------------------------------------------------------------

    def add_target(
        self, path: str, data: bytes | None = None, file: Path | None = None
    ) -> Published:
        """Publish one target from ``data`` (kept in the database) or ``file`` (kept on disk).

        Raises:
            ConfigError: a bad path, or not exactly one of ``data`` / ``file``.
            NotFoundError: ``file`` does not exist.
            StoreError: the database failed; nothing was published.
        """
        if (data is None) == (file is None):
            raise ConfigError(f"target {path!r} needs exactly one of data or file")
        return self.publish_targets({path: data if data is not None else file})

    def remove_target(self, path: str) -> Published:
        """Stop listing target ``path`` (its bytes stay findable for clients mid-update)."""
        return self.publish_targets({path: None})

    def publish_targets(self, changes: Mapping[str, bytes | Path | None]) -> Published:
        """Apply ``changes`` (path -> bytes, a file, or None to remove) in one new version.

        Raises:
            ConfigError: a bad path. NotFoundError: a missing file.
            StoreError: the database failed; nothing was published.
        """
        staged = self.stage(changes)

        def run() -> Published:
            with self.db.write() as conn:
                return self.publish_in(conn, staged)

        return tuf_store.retrying(self.db, "publishing targets", run)

    def stage(self, changes: Mapping[str, bytes | Path | None]) -> StagedChanges:
        """Check and hash ``changes`` before a transaction (files are read here, not under
        the lock). Raises ConfigError (bad path) or NotFoundError (missing file)."""
        blobs = tuple(_blob(path, value) for path, value in changes.items() if value is not None)
        removed = tuple(check_target_path(p) for p, value in changes.items() if value is None)
        return StagedChanges(blobs, removed)

    def publish_in(self, conn: sa.Connection, staged: StagedChanges) -> Published:
        """Publish ``staged`` inside the caller's write transaction ``conn``, so that the
        caller's own rows and the signed metadata commit (or roll back) together."""

        def mutate(targets: Targets) -> None:
            for blob in staged.blobs:
                targets.targets[blob.path] = blob.info
            for path in staged.removed:
                targets.targets.pop(path, None)

        tuf_store.heads(conn, lock=True)  # queue behind other publishers first
        for blob in staged.blobs:
            sha = _sha(blob.info)
            tuf_store.put_blob(conn, blob.path, sha, blob.info.length, blob.data, blob.file)
        return self._publish(conn, mutate)

    def refresh_timestamp(self) -> Published:
        """Sign a new timestamp version with a fresh expiry (same snapshot)."""

        def run() -> Published:
            with self.db.write() as conn:
                heads = tuf_store.heads(conn, lock=True)
                timestamp = self._bump_timestamp(conn, heads)
                return Published(heads["targets"], heads["snapshot"], timestamp)

        return tuf_store.retrying(self.db, "refreshing the timestamp", run)

    def refresh(self, now: datetime | None = None) -> Published | None:
        """Re-sign whatever is past half its lifetime (the root: within 30 days of expiry).

        Called periodically by the control plane; replicas calling it together are harmless
        (the second one finds fresh metadata under the lock and does nothing).
        """
        now = now if now is not None else datetime.now(UTC)

        def run() -> Published | None:
            with self.db.write() as conn:
                heads = tuf_store.heads(conn, lock=True)
                left = {role: self._left_s(conn, role, heads[role], now) for role in heads}
                if left["root"] < min(_ROOT_MARGIN_S, self.expiry.root_s / 2):
                    self._bump_root(conn, heads)
                if (
                    min(
                        left["targets"] * 2 - self.expiry.targets_s,
                        left["snapshot"] * 2 - self.expiry.snapshot_s,
                    )
                    < 0
                ):
                    return self._publish(conn, None)
                if left["timestamp"] * 2 < self.expiry.timestamp_s:
                    ts = self._bump_timestamp(conn, heads)
                    return Published(heads["targets"], heads["snapshot"], ts)
                return None

        return tuf_store.retrying(self.db, "refreshing metadata", run)

    # --- internals ---------------------------------------------------------------------------

    def _initialize(self) -> None:
        with self.db.write() as conn:
            heads = tuf_store.heads(conn, lock=True)
            if heads:
                self._check_keys(tuf_store.read(conn, "root", heads["root"]) or b"")
                return
            root = Root(expires=self._expires("root"), consistent_snapshot=True)
            for role, signer in self.signers.items():
                root.add_key(signer.public_key, role)
            targets = Targets(expires=self._expires("targets"))
            snapshot = Snapshot(expires=self._expires("snapshot"))
            snapshot.meta["targets.json"] = MetaFile(targets.version)
            files: list[tuple[str, Any]] = [("root", root), ("targets", targets)]
            files.append(("snapshot", snapshot))
            for role, signed in files:
                tuf_store.write(conn, role, 1, self._sign(role, Metadata(signed)), new=True)
            snapshot_bytes = tuf_store.read(conn, "snapshot", 1) or b""
            timestamp = Timestamp(expires=self._expires("timestamp"))
            timestamp.snapshot_meta = MetaFile.from_data(1, snapshot_bytes, ["sha256"])
            tuf_store.write(
                conn, "timestamp", 1, self._sign("timestamp", Metadata(timestamp)), new=True
            )

    def _check_keys(self, root_bytes: bytes) -> None:
        root = Metadata[Root].from_bytes(root_bytes).signed
        for role, signer in self.signers.items():
            if signer.public_key.keyid not in root.roles[role].keyids:
                raise ConfigError(
                    f"the {role} key in the keys folder is not the one the stored root trusts",
                    hint="start the control plane with the keys folder its database was "
                    "created with (HOME/control/keys); replicas share one keys folder",
                )

    def _publish(self, conn: sa.Connection, mutate: Callable[[Targets], None] | None) -> Published:
        heads = tuf_store.heads(conn, lock=True)
        targets_md = Metadata[Targets].from_bytes(_read(conn, "targets", heads["targets"]))
        if mutate is not None:
            mutate(targets_md.signed)
        t_version = self._resign(conn, "targets", targets_md, heads)
        snap_md = Metadata[Snapshot].from_bytes(_read(conn, "snapshot", heads["snapshot"]))
        snap_md.signed.meta["targets.json"] = MetaFile(t_version)
        s_version = self._resign(conn, "snapshot", snap_md, heads)
        heads["snapshot"] = s_version
        return Published(t_version, s_version, self._bump_timestamp(conn, heads))

    def _bump_timestamp(self, conn: sa.Connection, heads: dict[str, int]) -> int:
        ts_md = Metadata[Timestamp].from_bytes(_read(conn, "timestamp", heads["timestamp"]))
        snapshot_bytes = _read(conn, "snapshot", heads["snapshot"])
        ts_md.signed.snapshot_meta = MetaFile.from_data(
            heads["snapshot"], snapshot_bytes, ["sha256"]
        )
        return self._resign(conn, "timestamp", ts_md, heads)

    def _bump_root(self, conn: sa.Connection, heads: dict[str, int]) -> int:
        root_md = Metadata[Root].from_bytes(_read(conn, "root", heads["root"]))
        return self._resign(conn, "root", root_md, heads)

    def _resign(
        self, conn: sa.Connection, role: str, md: Metadata[Any], heads: dict[str, int]
    ) -> int:
        md.signed.version = heads[role] + 1
        md.signed.expires = self._expires(role)
        tuf_store.write(conn, role, md.signed.version, self._sign(role, md), new=False)
        heads[role] = md.signed.version
        return int(md.signed.version)

    def _sign(self, role: str, md: Metadata[Any]) -> bytes:
        md.signatures.clear()
        md.sign(self.signers[role])
        return md.to_bytes(_SERIALIZER)

    def _expires(self, role: str) -> datetime:
        now = datetime.now(UTC).replace(microsecond=0)
        return now + timedelta(seconds=self.expiry.seconds(role))

    def _left_s(self, conn: sa.Connection, role: str, version: int, now: datetime) -> float:
        md = Metadata[Any].from_bytes(_read(conn, role, version))
        return float((md.signed.expires - now).total_seconds())


def _read(conn: sa.Connection, role: str, version: int) -> bytes:
    data = tuf_store.read(conn, role, version)
    if data is None:
        raise NotFoundError(f"metadata {version}.{role}.json is missing from the database")
    return data


def _sha(info: TargetFile) -> str:
    return str(info.hashes["sha256"])


def _blob(path: str, value: bytes | Path) -> _Blob:
    check_target_path(path)
    if isinstance(value, bytes | bytearray):
        data = bytes(value)
        return _Blob(path, TargetFile.from_data(path, data, ["sha256"]), data, None)
    file = Path(value)
    if not file.is_file():
        raise NotFoundError(f"target file {str(file)!r} for {path!r} does not exist")
    info = hash_file(file)
    target = TargetFile(info.size_bytes, {"sha256": info.sha256}, path)
    return _Blob(path, target, None, str(file.resolve()))
