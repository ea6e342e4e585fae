"""The control plane's answers: JSON bodies, ranged bytes, and every error in one JSON shape.

Every EdgeError becomes an answer through :func:`edgeloop.serving.errors.error_response`; 401s
carry ``WWW-Authenticate: Bearer`` and count against their source's failure limit
(:mod:`edgeloop.control.throttle`); a database error's answer does not name the database.
Starlette's own 404/405, a client gone before its request was read, and a bug (500, logged
with its traceback) are answered here too.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from edgeloop.control.throttle import source_of
from edgeloop.core.errors import ConflictError, EdgeError, StoreError
from edgeloop.serving.errors import error_response

log = logging.getLogger("edgeloop.control")


def json_answer(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(doc), status, headers=headers, media_type="application/json")


def ranged(request: Request, data: bytes) -> Response:
    """``data``, or its tail from ``Range: bytes=N-`` (206), so downloads can resume."""
    header = request.headers.get("range", "")
    if header.startswith("bytes=") and header.endswith("-") and header[6:-1].isdigit():
        start = int(header[6:-1])
        if 0 < start < len(data):
            headers = {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
            return Response(data[start:], 206, headers, "application/octet-stream")
    return Response(data, media_type="application/octet-stream")


async def edge_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, EdgeError):
        raise exc
    where = request.app.state.api.plane.db.display_url
    if isinstance(exc, StoreError | ConflictError) and where in exc.message:
        # The database's location is the operator's to know (logged), not every caller's.
        log.warning("%s %s: %s", request.method, request.url.path, exc.message)
        exc = type(exc)(exc.message.replace(where, "the control plane's database"), hint=exc.hint)
    response = error_response(exc)
    if exc.http_status == 401:
        response.headers["WWW-Authenticate"] = "Bearer"
        request.app.state.failures.failed(source_of(request.scope))
    return response


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 (no such route) and 405 (wrong method), in the same JSON shape."""
    status = exc.status_code if isinstance(exc, HTTPException) else 400
    detail = exc.detail if isinstance(exc, HTTPException) else str(exc)
    body = {"error": f"{request.method} {request.url.path}: {detail}", "type": "HTTPException"}
    return json_answer(body, status)


async def gone(request: Request, exc: Exception) -> Response:
    """The client went away before its request was read: nobody reads the answer."""
    log.debug("%s %s: the client disconnected", request.method, request.url.path)
    return Response(status_code=400)


async def unexpected(request: Request, exc: Exception) -> Response:
    """A bug, not a bad request: logged with its traceback, answered in the same JSON shape."""
    log.exception("%s %s failed", request.method, request.url.path, exc_info=exc)
    body = {"error": f"internal error: {type(exc).__name__}", "type": "InternalError",
            "hint": "see the control plane's log"}  # fmt: skip
    return json_answer(body, 500)
