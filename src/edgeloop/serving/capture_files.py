"""Where a standalone server and a node keep their captured rows: JSON Lines files.

:class:`CaptureFile` appends the records (:class:`~edgeloop.serving.capture_sink.Kept`) of a
standalone server (``edgeloop serve --capture-out``), written off the event loop about once a
second; :class:`CaptureLog` is a node's byte-capped copy beside its outbox, which its training
worker reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from pathlib import Path

from edgeloop.serving.capture_record import Kept

log = logging.getLogger(__name__)
_FLUSH_S = 1.0


class CaptureFile:
    """A sink appending records as JSON Lines to ``path``, written off the event loop about
    once a second (and at :meth:`close`). A write that fails is logged and counted."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._buffer: list[Kept] = []
        self._lock = threading.Lock()
        self._scheduled = False
        self.written = 0
        self.failed = 0

    def __call__(self, kept: Kept) -> None:
        self._buffer.append(kept)
        if not self._scheduled:
            with contextlib.suppress(RuntimeError):  # no running loop: written at close
                loop = asyncio.get_running_loop()
                loop.call_later(_FLUSH_S, self._due, loop)
                self._scheduled = True

    def _due(self, loop: asyncio.AbstractEventLoop) -> None:
        """On the loop: take the buffer, write it in a worker thread."""
        lines, self._buffer = self._buffer, []
        self._scheduled = False
        loop.run_in_executor(None, self._write, lines)

    def _write(self, kept: list[Kept]) -> None:
        if not kept:
            return
        lines = [k.encoded() for k in kept]  # here, in a worker thread: off the event loop
        with self._lock:
            try:
                with self.path.open("ab") as f:
                    f.write(b"\n".join(lines) + b"\n")
                self.written += len(lines)
            except OSError as exc:
                self.failed += len(lines)
                log.warning("capture file %s: %s", self.path, exc)

    def close(self) -> None:
        """Write what is buffered now (at shutdown)."""
        lines, self._buffer = self._buffer, []
        self._write(lines)


class CaptureLog(CaptureFile):
    """A byte-capped :class:`CaptureFile` kept on a node beside its outbox (the agent's local
    copy of its own captured rows and their labels, which its training worker reads,
    :mod:`edgeloop.agent.train_worker`).

    Two files, ``captures.jsonl`` and ``captures.1.jsonl``: when a write would take the
    current one past half of ``max_bytes``, it becomes ``.1`` (the older ``.1`` is dropped) and
    a new one starts, so the log holds at most ``max_bytes`` (plus one batch of a second's
    rows) and always the newest records. A label whose sample was rotated out joins nothing.
    """

    def __init__(self, folder: Path, max_bytes: int) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 2:
            raise ValueError(f"capture log max_bytes {max_bytes!r} is not valid; expected >= 2")
        folder.mkdir(parents=True, exist_ok=True)
        super().__init__(folder / "captures.jsonl")
        self.older = folder / "captures.1.jsonl"
        self.max_bytes = max_bytes
        self.rotations = 0

    def files(self) -> list[Path]:
        """The log's files, oldest first (those that exist)."""
        return [p for p in (self.older, self.path) if p.is_file()]

    def _write(self, kept: list[Kept]) -> None:
        if not kept:
            return
        with self._lock:
            try:
                size = self.path.stat().st_size
            except OSError:
                size = 0
            if size and size + sum(k.size + 1 for k in kept) > self.max_bytes // 2:
                try:
                    self.path.replace(self.older)
                    self.rotations += 1
                except OSError as exc:
                    log.warning("capture log %s: %s", self.path, exc)
        super()._write(kept)
