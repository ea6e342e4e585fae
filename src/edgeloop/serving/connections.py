"""Bounds on what one HTTP connection may hold: time to send a request, header size, count.

uvicorn bounds none of the slow parts of reading a request: its keep-alive timer runs only
between requests and is cancelled by any byte, so a connection that sends nothing, a request line
one byte at a time, or a body that never ends stays open for as long as the client likes, and
httptools accepts headers of any size. A few hundred such sockets (slowloris, RSnake 2009) hold a
server's file descriptors and memory (issue 17 item 6: 500 idle plus 400 slow sockets held for
minutes). So each connection here is in one phase, read from uvicorn's own request state by a
:class:`Sweeper` that looks every ``interval_s`` (a quarter of the shortest bound, at most 1 s)
and closes the connections past their phase's bound:

==========  ===========================================  ======================================
phase       since                                        bound (then the connection is closed)
==========  ===========================================  ======================================
HEADERS     the connection opened; for a later request   ``header_timeout_s``; 408 answered
            on a kept-alive connection, when the sweeper
            first saw it under way
BODY        the headers were complete                    ``body_timeout_s`` for the whole body
APP         the body was complete                        none here: the app's ``--timeout-s``
IDLE        the sweeper first saw the answer sent        ``keep_alive_s`` (uvicorn's own timer
                                                         closes a silent one, but any byte
                                                         cancels it, even a lone CRLF)
==========  ===========================================  ======================================

A request pays for three small hooks (``since`` stamped at the end of its headers), no timer of
its own: within 1 us of uvicorn's own parsing, below this machine's noise (docs/reliability.md,
``python -m tests.serving.slow_clients --parse-cost``). A start the sweeper saw is late by at
most one interval, so those bounds hold within two intervals. Request lines and headers still
incomplete after ``max_header_bytes`` are answered 431 and the connection closed (counted per
read, so a complete header block that arrives in one read, at most the event loop's read size,
is parsed). A connection beyond ``max_connections`` makes room by
closing the connection that has waited longest without a request in progress (:func:`_drain`);
only when every other connection is busy with a request is it answered 503 with ``Retry-After``
and closed at once, before it can hold anything.

Defaults (why): 10 s for the headers (a request line and headers are a few hundred bytes: even a
9.6 kbit/s serial link sends 8 KiB in 7 s; Apache's mod_reqtimeout allows 20 s); 60 s for a body
(the 16 MiB body limit at 2.2 Mbit/s; raise it for slower links or larger bodies); 5 s keep-alive
(uvicorn's default); 64 KiB of headers (nginx allows 4 x 8 KiB buffers by default, 32 KiB);
1,000 connections (a node serves a handful of clients; ``ulimit -n`` is often 1,024).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from enum import Enum
from typing import Any

from edgeloop.core.errors import ConfigError, require

log = logging.getLogger(__name__)
_408 = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
_503 = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nretry-after: 1\r\n"
    b"connection: close\r\n\r\n"
)
_431 = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n"
    b"connection: close\r\n\r\n"
)


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """How long a client may take to send a request, and how much a connection may hold."""

    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    keep_alive_s: float = 5.0
    max_header_bytes: int = 64 * 1024
    max_connections: int = 1000

    def __post_init__(self) -> None:
        problems = [
            f"{name}={getattr(self, name)} (expected > 0 seconds)"
            for name in ("header_timeout_s", "body_timeout_s", "keep_alive_s")
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0)
        ]
        problems += [
            f"{name}={getattr(self, name)} (expected an integer >= 1)"
            for name in ("max_header_bytes", "max_connections")
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1)
        ]
        if problems:
            raise ConfigError(
                "connection limits are not valid: " + "; ".join(problems),
                hint="e.g. header_timeout_s=10, body_timeout_s=60, max_connections=1000",
            )

    @property
    def interval_s(self) -> float:
        """How often the sweeper looks: a bound is enforced within this much past it."""
        shortest = min(self.header_timeout_s, self.body_timeout_s, self.keep_alive_s)
        return min(1.0, shortest / 4)

    def to_dict(self) -> dict[str, Any]:
        return {
            "header_timeout_s": self.header_timeout_s,
            "body_timeout_s": self.body_timeout_s,
            "keep_alive_s": self.keep_alive_s,
            "max_header_bytes": self.max_header_bytes,
            "max_connections": self.max_connections,
        }


class Phase(Enum):
    HEADERS = "headers"
    BODY = "body"
    APP = "app"
    IDLE = "idle"


def phase_of(conn: Any) -> Phase:
    """Where ``conn`` (a :func:`bounded_protocol` connection) is, from uvicorn's state: its
    current request cycle (made when a request's headers are complete) and our one flag."""
    cycle = conn.cycle
    if cycle is None:
        return Phase.HEADERS  # the first request's headers are not complete yet
    if cycle.response_complete:
        return Phase.HEADERS if conn.reading_headers else Phase.IDLE
    return Phase.BODY if cycle.more_body else Phase.APP


def bounded_protocol(base: type[Any], limits: ConnectionLimits) -> type[Any]:
    """``base`` (uvicorn's httptools protocol, or a subclass) that stamps when a request's headers
    were complete, refuses oversized headers and connections past ``limits.max_connections``.
    Pass it to ``uvicorn.Config(http=...)`` and run a :class:`Sweeper` beside the server."""
    max_header = limits.max_header_bytes
    max_connections = limits.max_connections
    monotonic = time.monotonic

    class BoundedProtocol(base):  # type: ignore[misc]
        since = 0.0  # the connection opened, then each request's headers were complete
        reading_headers = True  # a request's line and headers are under way
        header_bytes = 0

        def connection_made(self, transport: asyncio.Transport) -> None:
            super().connection_made(transport)
            self.since = monotonic()
            if len(self.connections) > max_connections and not _drain(self.connections, self):
                transport.write(_503)
                transport.close()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self.reading_headers = True

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.reading_headers:  # still incomplete after this read
                self.header_bytes += len(data)
                if self.header_bytes > max_header and not self.transport.is_closing():
                    self.transport.write(_431)
                    self.transport.close()

        def on_headers_complete(self) -> None:
            self.reading_headers = False
            self.header_bytes = 0
            self.since = monotonic()
            super().on_headers_complete()

    BoundedProtocol.__name__ = BoundedProtocol.__qualname__ = f"Bounded{base.__name__}"
    return BoundedProtocol


def _drain(connections: set[Any], newcomer: Any) -> bool:
    """Make room for ``newcomer``: close the connection that has waited longest without a
    request in progress (still sending its headers, or idle between requests), as nginx reuses
    its idle keep-alive connections when it runs out (``ngx_drain_connections``). So sockets
    held open by one client cannot lock others out until the sweeper cuts them off. False when
    every other connection is busy with a request (then the newcomer is refused)."""
    waiting = [
        c for c in connections
        if c is not newcomer and phase_of(c) in (Phase.HEADERS, Phase.IDLE)
        and c.transport is not None and not c.transport.is_closing()
    ]  # fmt: skip
    if not waiting:
        return False
    oldest = min(waiting, key=lambda c: c.since)
    if phase_of(oldest) is Phase.HEADERS:
        oldest.transport.write(_408)
    oldest.transport.close()
    return True


def httptools_protocol(limits: ConnectionLimits) -> type[Any]:
    """uvicorn's httptools protocol with ``limits`` (see :func:`bounded_protocol`).

    Raises:
        MissingDependencyError: uvicorn or httptools is not installed (the ``serve`` extra).
    """
    require("httptools", "serve", "edgeloop serve's HTTP parser")
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    return bounded_protocol(HttpToolsProtocol, limits)


class Sweeper:
    """Closes the connections of ``connections`` (uvicorn's ``server_state.connections``) that
    stayed in a phase past its bound; counts what it closed, by phase."""

    def __init__(self, connections: set[Any], limits: ConnectionLimits) -> None:
        self.connections = connections
        self.limits = limits
        self.closed = {phase.value: 0 for phase in Phase}
        self._bounds = {
            Phase.HEADERS: limits.header_timeout_s,
            Phase.BODY: limits.body_timeout_s,
            Phase.IDLE: limits.keep_alive_s,
        }
        # (phase, request cycle) of each connection and when a sweep first saw it so: the start
        # of the phases no hook stamps (a later request's headers, idle after an answer)
        # (the cycle object itself, not its id: a new cycle may reuse a freed one's id)
        self._seen: dict[Any, tuple[Phase, Any, float]] = {}

    def _since(self, conn: Any, phase: Phase, now: float) -> float:
        cycle = conn.cycle
        if phase is Phase.BODY or cycle is None:
            return float(conn.since)  # stamped by the protocol
        seen = self._seen.get(conn)
        if seen is None or seen[0] is not phase or seen[1] is not cycle:
            seen = (phase, cycle, now)
            self._seen[conn] = seen
        return seen[2]

    def sweep(self, now: float | None = None) -> int:
        """Close every connection past its phase's bound now; how many were closed."""
        now = time.monotonic() if now is None else now
        closed = 0
        live = set(self.connections)
        for conn in live:
            phase = phase_of(conn)
            bound = self._bounds.get(phase)
            transport = conn.transport
            if bound is None or transport is None or transport.is_closing():
                continue
            if now - self._since(conn, phase, now) > bound:
                if phase is Phase.HEADERS:
                    transport.write(_408)
                transport.close()  # BODY: the app's receive() sees the disconnect
                self.closed[phase.value] += 1
                closed += 1
        for gone in [c for c in self._seen if c not in live]:
            del self._seen[gone]
        return closed

    async def run(self) -> None:
        """Sweep every ``limits.interval_s`` until cancelled."""
        while True:
            await asyncio.sleep(self.limits.interval_s)
            try:
                self.sweep()
            except Exception:  # a bug here must not stop the sweeps, nor the server
                log.exception("connection sweep failed")
