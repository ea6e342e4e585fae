"""The dashboard's answers and its guards: security headers, the session cookie, CSRF.

Every page carries a content security policy that allows scripts and styles from ``/ui/static``
only (no inline script, no ``eval``), forbids framing and posting forms elsewhere. The session
cookie is HttpOnly, SameSite=Strict, Secure when the request came over TLS, scoped to ``/ui``
and expires with its session. Every POST carries the session's CSRF token (a form field, or
the ``X-CSRF-Token`` header htmx sends), compared in constant time.
"""

from __future__ import annotations

import hmac
from typing import ClassVar

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from edgeloop.control.auth import ForbiddenError
from edgeloop.control.ui.html import Html
from edgeloop.control.ui.sessions import Session
from edgeloop.core.errors import EdgeError
from edgeloop.serving.errors import BadRequestError

COOKIE = "edgeloop_session"
PRE_COOKIE = "edgeloop_signin"  # the sign-in form's own CSRF value (double submit)
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class SignInNeededError(EdgeError):
    """No live session: a page answers with a redirect to the sign-in page (HTTP 303)."""

    exit_code: ClassVar[int] = 13
    http_status: ClassVar[int] = 303


class CsrfError(ForbiddenError):
    """A POST without this session's CSRF token (HTTP 403)."""


class ReadOnlyError(ForbiddenError):
    """A read-only session asked for an action (HTTP 403)."""


def page(body: Html, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status, {**HEADERS, **(headers or {})}, "text/html; charset=utf-8")


def redirect(location: str, request: Request) -> Response:
    """303 to ``location``; an htmx request is told with ``HX-Redirect`` instead."""
    if request.headers.get("hx-request") == "true":
        return Response(status_code=401, headers={**HEADERS, "HX-Redirect": location})
    return RedirectResponse(location, 303, headers=HEADERS)


def set_session_cookie(response: Response, request: Request, value: str, max_age: int) -> None:
    response.set_cookie(
        COOKIE,
        value,
        max_age=max_age,
        path="/ui",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )


def clear_session_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(
        COOKIE, path="/ui", secure=request.url.scheme == "https", httponly=True, samesite="strict"
    )


def same(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def check_action(session: Session, given_csrf: str | None, what: str) -> None:
    """Raise unless ``session`` may do ``what`` with this CSRF token.

    Raises:
        CsrfError: the token is missing or not this session's.
        ReadOnlyError: a read-only session.
    """
    if not same(given_csrf, session.csrf):
        raise CsrfError(
            f"the form to {what} carried no valid CSRF token; nothing was changed",
            hint="reload the page and use its form (a form from another site cannot act)",
        )
    if not session.may_act:
        raise ReadOnlyError(
            f"a read-only sign-in cannot {what}; nothing was changed",
            hint="sign in with the admin token to act",
        )


async def form(request: Request) -> FormData:
    """The posted form; a body that is no form is a 400, not a 500.

    Raises:
        BadRequestError: the body is not form data.
    """
    try:
        return await request.form()
    except EdgeError:  # over the route's cap (BodyLimits)
        raise
    except Exception as exc:  # a malformed body: the parser's own error, whatever its type
        raise BadRequestError(f"the body is not form data: {exc}") from exc
