"""Who may sign in to the dashboard: the admin token, and a read-only token.

The read-only token is the dashboard's own setting: ``EDGELOOP_READONLY_TOKEN``, else
``HOME/control/readonly.token``, created once (mode 0600) like the admin token. It opens the
dashboard in the read-only role only; the JSON API does not take it.
"""

from __future__ import annotations

import os
from pathlib import Path

from edgeloop.control import auth
from edgeloop.control.ui.sessions import Role
from edgeloop.core.errors import ConfigError

READONLY_ENV = "EDGELOOP_READONLY_TOKEN"
READONLY_FILE = "readonly.token"


def readonly_token(folder: Path) -> str:
    """The read-only token (see the module's docstring).

    Raises:
        ConfigError: shorter than 16 characters, or the file cannot be written or read.
    """
    given = os.environ.get(READONLY_ENV) or None
    if given is not None:
        if len(given) < 16:
            raise ConfigError(
                f"{READONLY_ENV} is {len(given)} characters; expected at least 16",
                hint=f"unset it to have a random one created in {folder / READONLY_FILE}",
            )
        return given
    path = folder / READONLY_FILE
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        text = path.read_text().strip()
        if not text:
            raise ConfigError(f"{str(path)!r} is empty", hint="delete it and restart") from None
        return text
    except OSError as exc:
        raise ConfigError(f"cannot write {str(path)!r}: {exc.strerror}") from exc
    token = auth.new_token()
    with os.fdopen(fd, "w") as out:
        out.write(token + "\n")
        out.flush()
        os.fsync(out.fileno())
    return token


def role_of(token: str, admin_hash: str, reader_hash: str) -> Role | None:
    """The role ``token`` signs in as, or None; both hashes are always compared (constant
    time), so the answer's timing does not say which one was close."""
    admin = auth.same(token, admin_hash)
    reader = auth.same(token, reader_hash)
    if admin:
        return Role.ADMIN
    return Role.READER if reader else None
