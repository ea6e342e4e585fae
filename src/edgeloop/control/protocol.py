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
        _timer: asyncio.TimerHandle | None = None  # the headers', then the body's deadline
        _awaiting = False  # a request's headers are being read
        _seen = 0  # bytes received since they began

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            if len(self.connections) > limits.max_connections:
                self._refuse(busy_answer)
                return
            self._await_headers()

        def data_received(self, data: bytes) -> None:
            if self._awaiting:
                self._seen += len(data)
            super().data_received(data)
            if self._awaiting and self._seen > limits.max_header_bytes:
                self._refuse(large_answer)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if not self._awaiting:
                self._await_headers()

        def on_headers_complete(self) -> None:
            self._awaiting = False
            self._disarm()
            super().on_headers_complete()
            if any(n in (b"content-length", b"transfer-encoding") for n, _ in self.headers):
                deadline = bodies.deadline_s(self.scope["method"], self.scope["path"])
                self._timer = self.loop.call_later(deadline, self._body_too_slow)

        def on_message_complete(self) -> None:
            self._disarm()  # the whole body is in
            super().on_message_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _await_headers(self) -> None:
            self._awaiting, self._seen = True, 0
            if self._timer is None:
                self._timer = self.loop.call_later(limits.header_timeout_s, self._too_slow)

        def _too_slow(self) -> None:
            self._timer = None
            if self._awaiting:
                self._refuse(timeout_answer if self._seen else None)

        def _body_too_slow(self) -> None:
            self._timer = None
            cycle = self.cycle
            started = cycle is not None and cycle.response_started
            self._refuse(None if started else slow_body_answer)

        def _refuse(self, answer: bytes | None) -> None:
            self._awaiting = False
            self._disarm()
            if not self.transport.is_closing():
                if answer is not None:
                    self.transport.write(answer)
                self.transport.close()

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    return Bounded
