"""The dashboard's routes, mounted by the control plane at ``/ui`` (same process, same port).

Every page and fragment first finds the request's session (:mod:`.sessions`); without one it
answers a redirect to the sign-in page and shows nothing. Every POST checks the session's CSRF
token and its role (:mod:`.security`). Errors a user can cause (an unknown id, a bad filter, a
refused action) are answered as an HTML page with their status, never a 500.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from edgeloop.control import auth
from edgeloop.control.plane import ControlPlane
from edgeloop.control.throttle import source_of
from edgeloop.control.ui import credentials, security, sessions
from edgeloop.control.ui.html import Html, render
from edgeloop.control.ui.layout import View, error_view, frame
from edgeloop.control.ui.sessions import Session
from edgeloop.core.errors import EdgeError

Handler = Callable[[Request, Session], Awaitable[View | Response | Html]]
FORM_BYTES = 16 * 1024  # a dashboard form is a few fields


class Dashboard:
    """The routes' state: the control plane, and the read-only token's hash."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        folder = plane.settings.home / "control"
        self.reader_hash = auth.token_hash(credentials.readonly_token(folder))
        sessions.create_table(plane.db)

    # --- sessions ---------------------------------------------------------------------------

    async def session(self, request: Request) -> Session:
        cookie = request.cookies.get(security.COOKIE)
        found = await run_in_threadpool(sessions.find, self.plane.db, cookie)
        if found is None:
            raise security.SignInNeededError("sign in to see the dashboard")
        return found

    def guarded(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        """``handler`` behind the session check, its errors as HTML pages."""

        async def endpoint(request: Request) -> Response:
            started = time.perf_counter()
            response = await answer(request)
            # The server's own time for the page, for the browser's devtools and the bench.
            took = (time.perf_counter() - started) * 1000
            response.headers["Server-Timing"] = f"app;dur={took:.2f}"
            return response

        async def answer(request: Request) -> Response:
            try:
                session = await self.session(request)
            except security.SignInNeededError:
                wanted = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return security.redirect(f"/ui/sign-in?next={quote(wanted, safe='')}", request)
            try:
                out = await handler(request, session)
            except EdgeError as exc:
                view = error_view(exc.http_status, exc.message, exc.hint, request.url.path)
                return security.page(frame(view, session), exc.http_status)
            if isinstance(out, Response):
                return out
            if isinstance(out, View):
                return security.page(frame(out, session))
            return security.page(out)  # an htmx fragment

        return endpoint

    # --- sign-in ----------------------------------------------------------------------------

    async def sign_in_page(
        self, request: Request, message: str = "", status: int = 200
    ) -> Response:
        pre = secrets.token_urlsafe(24)
        note = Html(f'<p role="alert" class="error">{message}</p>') if message else Html("")
        body = render("sign_in.html", message=note, csrf=pre, next=_next(request))
        response = security.page(body, status)
        response.set_cookie(
            security.PRE_COOKIE,
            pre,
            max_age=3600,
            path="/ui/sign-in",
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )
        return response

    async def sign_in(self, request: Request) -> Response:
        form = await security.form(request)
        token, given = form.get("token"), form.get("csrf")
        pre = request.cookies.get(security.PRE_COOKIE)
        if not isinstance(given, str) or pre is None or not security.same(given, pre):
            return await self.sign_in_page(
                request, "The sign-in form expired or came from elsewhere; try again.", 403
            )
        role = None
        if isinstance(token, str) and 0 < len(token) <= 256:
            role = credentials.role_of(token, self.plane.admin_hash, self.reader_hash)
        if role is None:
            # Counted against this source like any wrong credential (control/throttle.py): a
            # source over its limit is answered 429 before its next guess is looked at.
            request.app.state.failures.failed(source_of(request.scope))
            return await self.sign_in_page(request, "That token is not valid.", 401)
        cookie, session = await run_in_threadpool(sessions.start, self.plane.db, role)
        target = _next(request, str(form.get("next") or ""))
        response = RedirectResponse(target, 303, headers=security.HEADERS)
        max_age = int(session.expires_at - time.time())
        security.set_session_cookie(response, request, cookie, max_age)
        response.delete_cookie(security.PRE_COOKIE, path="/ui/sign-in")
        return response

    async def sign_out(self, request: Request) -> Response:
        try:
            session = await self.session(request)
        except security.SignInNeededError:
            return security.redirect("/ui/sign-in", request)
        form = await security.form(request)
        given = form.get("csrf")
        if not isinstance(given, str) or not security.same(given, session.csrf):
            view = error_view(403, "the sign-out form carried no valid CSRF token", None, "/ui")
            return security.page(frame(view, session), 403)
        await run_in_threadpool(sessions.end, self.plane.db, request.cookies.get(security.COOKIE))
        response = RedirectResponse("/ui/sign-in", 303, headers=security.HEADERS)
        security.clear_session_cookie(response, request)
        return response


def _next(request: Request, given: str | None = None) -> str:
    """Where to go after signing in: a path under /ui only (never another site)."""
    target = given if given is not None else request.query_params.get("next", "")
    if not target.startswith("/ui/") or target.startswith("//") or "\\" in target:
        return "/ui/fleet"
    return target


async def _home(request: Request) -> Response:
    return RedirectResponse("/ui/fleet", 303, headers=security.HEADERS)


def static_folder() -> Path:
    return Path(str(resources.files(__package__).joinpath("static")))


def routes(plane: ControlPlane) -> list[BaseRoute]:
    """The dashboard's routes (see :func:`edgeloop.control.ui.mount`)."""
    from edgeloop.control.ui import pages_fleet, pages_registry, pages_rollouts
    from edgeloop.control.ui.datasets import data_routes

    ui = Dashboard(plane)
    fleet = pages_fleet.FleetPages(plane)
    rollouts = pages_rollouts.RolloutPages(plane)
    registry = pages_registry.RegistryPages(plane)
    g = ui.guarded
    return [
        Mount(
            "/ui",
            routes=[
                Route("/", _home, methods=["GET"]),
                Route("/sign-in", ui.sign_in_page, methods=["GET"]),
                Route("/sign-in", ui.sign_in, methods=["POST"]),
                Route("/sign-out", ui.sign_out, methods=["POST"]),
                Route("/fleet", g(fleet.fleet), methods=["GET"]),
                Route("/nodes/{node_id}", g(fleet.node), methods=["GET"]),
                Route("/nodes/{node_id}/metrics.json", g(fleet.series), methods=["GET"]),
                Route("/rollouts", g(rollouts.list), methods=["GET"]),
                Route("/rollouts", g(rollouts.deploy), methods=["POST"]),
                Route("/rollouts/{rid}", g(rollouts.detail), methods=["GET"]),
                Route("/rollouts/{rid}/live", g(rollouts.live), methods=["GET"]),
                Route("/rollouts/{rid}/{action}", g(rollouts.act), methods=["POST"]),
                Route("/models", g(registry.models), methods=["GET"]),
                Route("/models/{name}/{version}", g(registry.version), methods=["GET"]),
                Route("/monitoring", g(registry.monitoring), methods=["GET"]),
                *pages_registry.work_routes(plane, g),  # experiments, federated, jobs
                *data_routes(plane, g),  # data sets, the label queue (control/ui/datasets.py)
                Route("/{planned}", g(pages_registry.planned), methods=["GET"]),
                Mount("/static", StaticFiles(directory=static_folder()), name="ui-static"),
            ],
        )
    ]
