"""Accept new connections in batches, so that clients still get in while the server is busy.

libuv, under uvloop, accepts one connection per event-loop iteration (libuv pull request
#3696, "unix: don't accept() connections in a loop", 2022). An overloaded server's iterations
last tens of milliseconds, so a burst of new connections drains at a few dozen a second and
their first requests wait seconds in the kernel's accept queue, where no admission control can
see them: measured here as 2xx answers 6 s late while the server's own figure for every request
stayed under 250 ms, with 250-450 connections waiting in the accept queue throughout
(docs/benchmarks.md). The stdlib loop accepts up to ``backlog`` per readiness event;
:class:`Acceptor` does the same on any loop and hands each socket to the loop as an accepted
connection, with the same protocol the server would have created (over TLS when given a
server context: the handshake then runs on the loop, bounded by ``HANDSHAKE_TIMEOUT_S``).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable

ACCEPT_BATCH = 256  # connections accepted per readiness event at most (then the loop moves on)
_RETRY_S = 0.1  # out of file descriptors: try again after this long
HANDSHAKE_TIMEOUT_S = 10.0  # as the header deadline: a silent TLS client holds a socket no longer

log = logging.getLogger(__name__)


class Acceptor:
    """Accepts connections on listening ``sock`` and connects each to a ``factory()`` protocol.

    ``stopping()`` is asked before each batch: once it says yes, nothing more is accepted (the
    connections left in the accept queue are refused when the socket closes).
    """

    def __init__(
        self,
        sock: socket.socket,
        factory: Callable[[], asyncio.Protocol],
        stopping: Callable[[], bool],
        context: ssl.SSLContext | None = None,
    ) -> None:
        self.sock = sock
        self.context = context
        self._handshake_s = None if context is None else HANDSHAKE_TIMEOUT_S
        self.factory = factory
        self.stopping = stopping
        self.loop = asyncio.get_running_loop()
        self.accepted = 0
        self._fd = sock.fileno()
        self._reading = False
        self._pending: set[asyncio.Task[object]] = set()

    def start(self) -> None:
        self.sock.setblocking(False)
        if not self._reading:
            self.loop.add_reader(self._fd, self._accept)
            self._reading = True

    def stop(self) -> None:
        if self._reading:
            self.loop.remove_reader(self._fd)
            self._reading = False

    def _accept(self) -> None:
        if self.stopping():
            self.stop()
            return
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:  # EMFILE, ENFILE, ENOBUFS: pause, the kernel keeps the rest
                log.warning("accepting connections paused %.1f s: %s", _RETRY_S, exc)
                self.stop()
                self.loop.call_later(_RETRY_S, self.start)
                return
            self._connect(conn)

    def _connect(self, conn: socket.socket) -> None:
        conn.setblocking(False)
        if conn.family in (socket.AF_INET, socket.AF_INET6):
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.accepted += 1
        task: asyncio.Task[object] = self.loop.create_task(
            self.loop.connect_accepted_socket(self.factory, conn, ssl=self.context,
                                              ssl_handshake_timeout=self._handshake_s)
        )  # fmt: skip
        self._pending.add(task)
        task.add_done_callback(lambda done: self._connected(done, conn))

    def _connected(self, task: asyncio.Task[object], conn: socket.socket) -> None:
        self._pending.discard(task)
        error = None if task.cancelled() else task.exception()
        if task.cancelled() or error is not None:
            conn.close()
            if error is not None:
                log.warning("a new connection failed: %s", error)
