"""What one request may cost the control plane: a body cap per route and a deadline to read it.

Every route has a body kind (:class:`Body`); :class:`WireLimits` gives each kind a cap in bytes
and a deadline in seconds. :class:`BodyLimits` (an ASGI layer in front of the routes) enforces
both before and while the body is read:

* a ``Content-Length`` above the cap, or any body on a route that takes none, is answered 413 at
  once, before a byte of the body is read, and the connection is closed;
* a chunked body (no length) is counted as it streams in and cut off at the cap (413);
* a body not received whole within its deadline is answered 408 and its connection closed
  (:mod:`edgeloop.control.protocol` keeps that timer: one per request with a body, where a
  timeout around each ``receive`` cost ~10 us a request);
* an answer sent before a chunked body was read whole (a 401 on an admin route, say) closes the
  connection, so the rest of a large or slow body is never waited for.

The unauthenticated ``POST /api/v1/enroll`` read any body whole before: four parallel 256 MiB
bodies took the process from 104 MB to 1.8 GB (issue 17). Time limits on the connection itself
(headers, idle sockets, their number) are :mod:`edgeloop.control.protocol`'s; both are
configured by :class:`WireLimits`.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from edgeloop.core.errors import ConfigError, EdgeError
from edgeloop.serving.errors import PayloadTooLargeError, error_response

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
KIB, MIB = 1 << 10, 1 << 20
MAX_CONNECTIONS = 16384


# A model upload's reference profile (the optional multipart file ``profile``): its size is
# bounded by design (docs/monitoring.md, "Profiles"), so a far larger file is not a profile.
PROFILE_BYTES = 16 * MIB


class Body(Enum):
    """What a route's body is (each kind has its cap in :class:`WireLimits`)."""

    NONE = "none"  # GET routes, and POSTs that take no body
    SMALL = "small"  # the unauthenticated enrollment: a name, capabilities, a URL
    JSON = "json"  # the admin's JSON calls
    REPORT = "report"  # a node's report
    TELEMETRY = "telemetry"  # a node's telemetry batch
    MODEL = "model"  # a model artifact upload (multipart)


@dataclass(frozen=True, slots=True)
class WireLimits:
    """Caps (bytes) and deadlines (seconds) of the control plane's requests and connections.

    The defaults hold the largest legitimate body of each kind with room to spare: an agent's
    report is a few kB, a telemetry batch at most 1,000 items (``telemetry.MAX_ITEMS``).
    """

    small_bytes: int = 64 * KIB
    json_bytes: int = 1 * MIB
    report_bytes: int = 1 * MIB
    telemetry_bytes: int = 8 * MIB
    model_bytes: int = 2048 * MIB
    body_timeout_s: float = 30.0  # to read a whole body, from the request's headers on
    upload_timeout_s: float = 900.0  # the same for a model upload (admin only, checked first)
    header_timeout_s: float = 10.0  # from connecting (or a request's first byte) to its headers
    max_connections: int = MAX_CONNECTIONS  # open at once; one more is answered 503 and closed (the
    # command line lowers it to the open-file limit: connections_default)
    max_header_bytes: int = 64 * KIB

    def __post_init__(self) -> None:
        for name in ("small_bytes", "json_bytes", "report_bytes", "telemetry_bytes",
                     "model_bytes", "max_connections", "max_header_bytes"):  # fmt: skip
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} is {value!r}; expected a whole number >= 1")
        for name in ("body_timeout_s", "upload_timeout_s", "header_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ConfigError(f"{name} is {value!r}; expected a number of seconds > 0")

    def of(self, kind: Body) -> tuple[int, float]:
        """``(cap_bytes, deadline_s)`` of a body of ``kind``."""
        if kind is Body.NONE:
            return 0, self.body_timeout_s
        if kind is Body.MODEL:
            return self.model_bytes, self.upload_timeout_s
        caps = {Body.SMALL: self.small_bytes, Body.JSON: self.json_bytes,
                Body.REPORT: self.report_bytes, Body.TELEMETRY: self.telemetry_bytes}  # fmt: skip
        return caps[kind], self.body_timeout_s


def wire_limits(
    max_model_mb: int | None = None,
    body_timeout_s: float | None = None,
    upload_timeout_s: float | None = None,
    header_timeout_s: float | None = None,
    max_connections: int | None = None,
) -> WireLimits:
    """The defaults, with what the command line gave (None: the default). Raises ConfigError."""
    given: dict[str, Any] = {"body_timeout_s": body_timeout_s, "upload_timeout_s": upload_timeout_s,
                             "header_timeout_s": header_timeout_s,
                             "max_connections": max_connections}  # fmt: skip
    if max_connections is None:
        given["max_connections"] = connections_default()
    if max_model_mb is not None:
        if not 1 <= max_model_mb <= 1 << 20:
            raise ConfigError(f"--max-model-mb {max_model_mb} is not valid; expected 1 to 1048576")
        given["model_bytes"] = max_model_mb * MIB
    return WireLimits(**{k: v for k, v in given.items() if v is not None})


def connections_default(reserve: int = 256) -> int:
    """16384, or fewer when the process may open fewer files: a limit above the descriptors
    left would never be reached (accept() would fail with EMFILE first), ``reserve`` kept for
    the database, the artifacts and the threads."""
    most = MAX_CONNECTIONS
    try:
        import resource
    except ImportError:  # not a Unix
        return most
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return most
    return max(64, min(most, soft - reserve))


Route = tuple[re.Pattern[str], str, Body]


class RouteBodies:
    """Each route's body cap and deadline: ``routes`` are ``(path regex, method, kind)``, first
    match wins; a request no route takes (answered 404 or 405) may carry no body."""

    def __init__(self, routes: Sequence[Route], limits: WireLimits) -> None:
        self.limits = limits
        self._none = limits.of(Body.NONE)
        # (cap, deadline) worked out once: this runs for every request with a body.
        self._routes = [(pattern, verb, limits.of(kind)) for pattern, verb, kind in routes]

    def of(self, method: str, path: str) -> tuple[int, float]:
        """``(cap_bytes, deadline_s)`` of the body of a request to ``method path``."""
        for pattern, verb, limit in self._routes:
            if verb == method and pattern.match(path):
                return limit
        return self._none

    def deadline_s(self, method: str, path: str) -> float:
        """Seconds the body of a request to ``method path`` may take to arrive."""
        return self.of(method, path)[1]


class BodyLimits:
    """ASGI layer: each request's body checked against its route's cap (the deadline to
    receive it is the connection's: :mod:`edgeloop.control.protocol`)."""

    def __init__(self, app: Any, bodies: RouteBodies) -> None:
        self.app = app
        self.bodies = bodies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared, chunked = _framing(scope["headers"])
        if not chunked and not declared:  # no body: nothing to bound
            await self.app(scope, receive, send)
            return
        cap, _ = self.bodies.of(scope["method"], scope["path"])
        if cap == 0 or (declared is not None and declared > cap):
            size = "a body" if declared is None else f"a body of {declared} bytes"
            await _refuse(send, _too_large(scope, size, cap))
            return
        if not chunked:  # a declared length within the cap: the server reads no more than it
            await self.app(scope, receive, send)
            return
        body = _CountedBody(receive, cap)

        async def closing_send(message: Message) -> None:
            if message["type"] == "http.response.start" and (body.unread or body.failed):
                # The rest of the body will not be read: close rather than drain it.
                message["headers"] = [*message.get("headers", []), (b"connection", b"close")]
            await send(message)

        await self.app(scope, body.receive, closing_send)


class _CountedBody:
    """``receive`` that counts a chunked body against ``cap``."""

    def __init__(self, receive: Receive, cap: int) -> None:
        self._receive = receive
        self.cap = cap
        self.size = 0
        self.unread = True  # the last body message has not come yet
        self.failed = False

    async def receive(self) -> Message:
        message = await self._receive()
        if self.unread and message["type"] == "http.request":
            self.size += len(message.get("body", b""))
            if self.size > self.cap:
                self.failed = True
                raise PayloadTooLargeError(
                    f"the request body is over {self.cap} bytes (the cap of this route)",
                    hint="send smaller batches; the caps are in docs/control.md",
                )
            self.unread = bool(message.get("more_body", False))
        return message


def _framing(headers: Sequence[tuple[bytes, bytes]]) -> tuple[int | None, bool]:
    """``(Content-Length or None, chunked)`` of a request (the server already refused a
    malformed length)."""
    declared, chunked = None, False
    for name, value in headers:
        if name == b"content-length" and value.strip().isdigit():
            declared = int(value)
        elif name == b"transfer-encoding":
            chunked = True
    return declared, chunked


def _too_large(scope: Scope, size: str, cap: int) -> PayloadTooLargeError:
    where = f"{scope['method']} {scope['path']}"
    if cap == 0:
        return PayloadTooLargeError(f"{where} takes no body; the request has {size}")
    return PayloadTooLargeError(
        f"{where} takes at most {cap} bytes; the request has {size}",
        hint="send smaller batches; the caps are in docs/control.md",
    )


async def _refuse(send: Send, exc: EdgeError) -> None:
    """Answer ``exc`` without reading the body, and close the connection."""
    response = error_response(exc)
    headers = [(k, v) for k, v in response.raw_headers if k != b"connection"]
    await send({"type": "http.response.start", "status": response.status_code,
                "headers": [*headers, (b"connection", b"close")]})  # fmt: skip
    await send({"type": "http.response.body", "body": response.body})
