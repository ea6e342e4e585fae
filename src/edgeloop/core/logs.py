"""Log set-up for the HTTP servers, without touching the process's other log handlers.

uvicorn's default ``log_config`` goes through :func:`logging.config.dictConfig`, which first
closes every handler already installed in the process (``logging.config._clearExistingHandlers``).
An application that embeds a server loses its own handlers; a handler that owns its stream closes
it (absl's, which OpenVINO's converter installs when absl is importable, closed the stream it held:
pytest's captured stderr, crashing the test run). So the servers pass ``log_config=None`` to
uvicorn and call :func:`server_logging` instead: one handler on the ``uvicorn`` logger, added once.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO


class _CurrentStderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time of the record, never closing it (a
    stream bound at set-up may be replaced and closed later, e.g. by a test runner)."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass  # always the current sys.stderr


def server_logging() -> None:
    """uvicorn's log records to stderr in its own format (``INFO:     message``); idempotent."""
    logger = logging.getLogger("uvicorn")
    if not any(isinstance(h, _CurrentStderr) for h in logger.handlers):
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
        logger.addHandler(handler)
    logger.propagate = False
