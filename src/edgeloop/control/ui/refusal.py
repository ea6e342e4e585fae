"""The dashboard's answer when the control plane refuses a source before any route runs.

A source over its limit on wrong credentials (:mod:`edgeloop.control.throttle`) is answered 429
with ``Retry-After`` whatever it asks for. Under ``/ui`` that answer is an HTML page (a browser
asked for one; the API's JSON would show as raw text), with the dashboard's security headers.
An htmx request (``HX-Request: true``) gets the same status and ``Retry-After`` and an empty
body: htmx swaps nothing on a 4xx, and app.js says in the page's live region when to retry.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.responses import Response

from edgeloop.control.ui.html import render
from edgeloop.control.ui.security import HEADERS
from edgeloop.core.errors import EdgeError

PREFIX = "/ui"


def wanted(scope: Mapping[str, Any]) -> bool:
    """Whether ``scope`` asks for a dashboard page or fragment (its answers are HTML)."""
    path = str(scope.get("path", ""))
    return path == PREFIX or path.startswith(PREFIX + "/")


def answer(scope: Mapping[str, Any], refusal: EdgeError, retry_after_s: int) -> Response:
    """``refusal`` as the dashboard answers it: HTML (or nothing for htmx), status, Retry-After."""
    headers = {**HEADERS, "Retry-After": str(retry_after_s)}
    sent = dict(scope.get("headers") or [])
    if sent.get(b"hx-request") == b"true":
        return Response(b"", refusal.http_status, headers)
    body = render(
        "refused.html",
        wait=retry_after_s,
        status=refusal.http_status,
        message=refusal.message,
        hint=refusal.hint or "",
    )
    return Response(body, refusal.http_status, headers, "text/html; charset=utf-8")
