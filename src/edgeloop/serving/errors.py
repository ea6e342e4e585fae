"""The server's HTTP statuses: the few errors only a server raises, and the one translation.

Every error a request can meet is an :class:`~edgeloop.core.errors.EdgeError`; its class carries
the HTTP status (``EdgeError.http_status``), so :func:`error_response` is the only place that
turns an error into an answer. The body follows the Open Inference Protocol, whose clients read
``{"error": "<message>"}``; ``type`` and ``hint`` are extra keys those clients ignore.

The three classes below are the statuses the core tree has no class for. They derive from the
core class whose meaning they refine, so code that catches the core class still catches them.
"""

from __future__ import annotations

from typing import ClassVar

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from edgeloop.core.errors import ConfigError, DataError, EdgeError, OverloadError


class BadRequestError(ConfigError):
    """The HTTP request itself is malformed: JSON, a binary header, a field of the wrong kind."""


class PayloadTooLargeError(DataError):
    """The request body is larger than the server's ``--max-body-mb``."""

    http_status: ClassVar[int] = 413


class RetryableError(OverloadError):
    """An overload answer that knows when to come back (seconds, an estimate)."""

    def __init__(self, message: str, *, retry_after_s: int = 1, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.retry_after_s = max(1, retry_after_s)


class QueueFullError(RetryableError):
    """A model's bounded queue is full: the request is refused at once, not queued."""


class NotReadyError(RetryableError):
    """The model (or the whole server) is still loading, or is being drained; retry later."""

    http_status: ClassVar[int] = 503


class DeadlineError(OverloadError):
    """The request did not finish within the server's per-request timeout."""

    http_status: ClassVar[int] = 504


RETRYABLE = frozenset({429, 503})


def error_response(exc: EdgeError) -> Response:
    """The answer to a request that failed with ``exc``: its HTTP status and a JSON body.

    429 and 503 answers carry ``Retry-After`` (RFC 9110 10.2.3: it tells a client when to try
    again instead of hammering an overloaded server): the error's own estimate, else 1 s.
    """
    body = {"error": exc.message, "type": type(exc).__name__, "hint": exc.hint}
    headers: dict[str, str] = {}
    if exc.http_status in RETRYABLE:
        headers["Retry-After"] = str(getattr(exc, "retry_after_s", 1))
    return Response(
        orjson.dumps(body),
        status_code=exc.http_status,
        headers=headers,
        media_type="application/json",
    )


def internal_response(exc: Exception) -> Response:
    """The answer to a request that met a bug (an exception no check raised on purpose): 500,
    naming the exception's type only (no traceback, no internals; the server log has both)."""
    body = {
        "error": f"internal error ({type(exc).__name__}) while answering this request",
        "type": "InternalError",
        "hint": "this is a server bug: report it with the server's log",
    }
    return Response(orjson.dumps(body), status_code=500, media_type="application/json")


async def edge_error_handler(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, EdgeError):  # registered for EdgeError only
        raise exc
    return error_response(exc)


async def http_error_handler(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 (no such route) and 405 (wrong method), in the protocol's shape."""
    status = exc.status_code if isinstance(exc, HTTPException) else 400
    detail = exc.detail if isinstance(exc, HTTPException) else str(exc)
    headers = exc.headers if isinstance(exc, HTTPException) else None
    body = {"error": f"{request.method} {request.url.path}: {detail}", "type": "HTTPException"}
    return Response(
        orjson.dumps(body), status_code=status, headers=headers, media_type="application/json"
    )
