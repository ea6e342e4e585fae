"""The update repository's signing keys: one ed25519 key per TUF role, PEM files in a folder.

Each key is a PKCS#8 PEM file ``<role>.pem`` (mode 0600) loaded into a securesystemslib
``CryptoSigner``. Keys are created on first use under an exclusive ``flock`` on
``keys_dir/.lock``, so two control-plane processes starting together on one home folder end up
with the same keys instead of each writing its own. Key rotation is out of scope: a repository
keeps the keys its root was signed with.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.signer import CryptoSigner

from edgeloop.core.errors import ConfigError, UntrustedArtifactError

ROLES = ("root", "targets", "snapshot", "timestamp")


@contextlib.contextmanager
def keys_lock(keys_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``keys_dir`` (created if missing) for the block."""
    try:
        keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(keys_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise ConfigError(
            f"cannot use keys folder {str(keys_dir)!r}: {exc.strerror}",
            hint="give a writable folder (the control plane keeps it under HOME/control/keys)",
        ) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def load_or_create(keys_dir: Path) -> dict[str, CryptoSigner]:
    """The signer of every role, creating the missing keys (callers hold :func:`keys_lock`).

    Raises:
        ConfigError: the folder is not writable, or a key file is readable by others.
        UntrustedArtifactError: a key file is not an ed25519 PEM private key.
    """
    return {role: _load_or_create(keys_dir / f"{role}.pem") for role in ROLES}


def _load_or_create(path: Path) -> CryptoSigner:
    if not path.exists():
        _write_new_key(path)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(
            f"signing key {str(path)!r} has mode {oct(mode)}; other users could read it",
            hint=f"run: chmod 600 {path}",
        )
    try:
        key = load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise UntrustedArtifactError(
            f"signing key {str(path)!r} is not a PEM private key: {exc}",
            hint="restore the key from its backup; a new key would not match the signed root",
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise UntrustedArtifactError(
            f"signing key {str(path)!r} is a {type(key).__name__}; expected an ed25519 key",
            hint="restore the key from its backup",
        )
    return CryptoSigner(key)


def _write_new_key(path: Path) -> None:
    signer = CryptoSigner.generate_ed25519()
    tmp = path.with_name(f".tmp-{path.name}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(signer.private_bytes)
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise ConfigError(
            f"cannot write signing key {str(path)!r}: {exc.strerror}",
            hint="give a writable keys folder",
        ) from exc
