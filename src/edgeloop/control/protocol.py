"""The control plane's HTTP connections, bounded in time, header size and number.

uvicorn bounds only the idle time between two requests of a connection (``timeout_keep_alive``):
a socket that connects and sends nothing, or a request line or headers sent a byte at a time,
stayed open for minutes (500 idle and 400 slow sockets were held: issue 17). :func:`bounded`
makes uvicorn's httptools protocol also

* close a connection whose request headers are not all in within ``header_timeout_s`` of its
  first byte (or of connecting), answering 408 when part of a request came;
* answer 431 and close when the headers run past ``max_header_bytes``;
* answer 503 and close a new connection while ``max_connections`` are open;
* answer 408 and close a connection whose request body has not all arrived within its route's
  deadline (``body_timeout_s``; ``upload_timeout_s`` for model uploads) of its headers.

A body's cap is :class:`edgeloop.control.limits.BodyLimits`'s.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from edgeloop.control.limits import RouteBodies, WireLimits


def _answer(status: str, text: str) -> bytes:
    body = f'{{"error": "{text}", "type": "ConnectionLimit"}}'.encode()
    head = (f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n")  # fmt: skip
    return head.encode() + body


def bounded(limits: WireLimits, bodies: RouteBodies) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with ``limits``' header deadline, header size and
    connection count, and each route's body deadline from ``bodies`` (pass it as
    ``uvicorn.Config(http=...)``)."""
    timeout_answer = _answer(
        "408 Request Timeout",
        f"the request headers did not arrive within {limits.header_timeout_s:g} s",
    )
    large_answer = _answer(
        "431 Request Header Fields Too Large",
        f"the request headers are over {limits.max_header_bytes} bytes",
    )
    slow_body_answer = _answer(
        "408 Request Timeout", "the request body did not arrive within the server's deadline"
    )
    busy_answer = _answer(
        "503 Service Unavailable",
        f"the server holds its most connections ({limits.max_connections}); retry later",
    )

    class Bounded(HttpToolsProtocol):
        # Where the connection is: 0 between requests (uvicorn's keep-alive timeout applies),
        # 1 reading a request's headers (also from connecting until the first byte), 2 reading
        # its body. A timer is armed only when a phase outlives one data_received call: most
        # requests arrive in one packet, and arming and cancelling a timer for each of them
        # cost the agents' polls more than the rest of this class.
        _phase = 0
        _since: float | None = 0.0  # when the phase began (None: in this data_received call)
        _seen = 0  # bytes received while in phase 1
        _timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            if len(self.connections) > limits.max_connections:
                self._refuse(busy_answer)
                return
            self._phase, self._since = 1, self.loop.time()
            self._timer = self.loop.call_at(self._deadline(), self._expired)

        def data_received(self, data: bytes) -> None:
            if not self._phase:  # bytes between requests: the next one is under way (a lone
                self._phase, self._since, self._seen = 1, None, 0  # CRLF must not hold it)
            if self._phase == 1:
                self._seen += len(data)
            super().data_received(data)
            if not self._phase:
                return
            if self._since is None:  # read the clock once per call, not per request
                self._since = self.loop.time()
            if self._phase == 1 and self._seen > limits.max_header_bytes:
                self._refuse(large_answer)
            elif self._timer is None and not self.transport.is_closing():
                self._timer = self.loop.call_at(self._deadline(), self._expired)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._phase != 1:  # the first request's phase 1 began at connecting
                self._phase, self._since, self._seen = 1, None, 0

        def on_headers_complete(self) -> None:
            self._phase, self._since = 2, None
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._phase = 0
            super().on_message_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            super().connection_lost(exc)

        def _deadline(self) -> float:
            since = self.loop.time() if self._since is None else self._since
            if self._phase == 1:
                return since + limits.header_timeout_s
            return since + bodies.deadline_s(self.scope["method"], self.scope["path"])

        def _expired(self) -> None:
            self._timer = None
            if self._phase == 0 or self.transport.is_closing():
                return
            deadline = self._deadline()
            if self.loop.time() < deadline:  # a later phase than the one it was armed for
                self._timer = self.loop.call_at(deadline, self._expired)
            elif self._phase == 1:
                self._refuse(timeout_answer if self._seen else None)
            else:
                started = self.cycle is not None and self.cycle.response_started
                self._refuse(None if started else slow_body_answer)

        def _refuse(self, answer: bytes | None) -> None:
            self._phase = 0
            if not self.transport.is_closing():
                if answer is not None:
                    self.transport.write(answer)
                self.transport.close()

    return Bounded
