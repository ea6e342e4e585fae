"""Signing in to the dashboard over HTTPS against a real ``edgeloop control`` process (no
browser needed): the session cookie's attributes (Secure under TLS), the sign-in form's own
CSRF check, and wrong tokens slowed by the control plane's per-source limit with no hint about
what was wrong."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from tests.control.process import control_process

from edgeloop.core.tls import client_context
from edgeloop.sdk.fleet_tls import make_fleet_tls

ADMIN = "admin-" + "a" * 32


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found is not None, page
    return found.group(1)


def _form(client: httpx.Client) -> str:
    page = client.get("/ui/sign-in")
    assert page.status_code == 200
    return _csrf(page.text)


def test_sign_in_sets_a_strict_secure_cookie_and_wrong_tokens_are_slowed(tmp_path: Path) -> None:
    certs = make_fleet_tls(tmp_path / "tls")
    serve = ("--tls-cert", str(certs.cert), "--tls-key", str(certs.key))
    verify = client_context(certs.client(mutual=False))
    with control_process(tmp_path / "home", None, *serve, admin_token=ADMIN) as cp:
        assert cp.url.startswith("https://")
        with httpx.Client(base_url=cp.url, timeout=30, verify=verify) as client:
            # The form's CSRF value must come back with its cookie: a form posted from
            # elsewhere is refused (403) and not counted as a guess.
            forged = client.post("/ui/sign-in", data={"token": ADMIN, "csrf": "x"})
            assert forged.status_code == 403
            signed = client.post(
                "/ui/sign-in", data={"token": ADMIN, "csrf": _form(client), "next": "/ui/models"}
            )
            assert signed.status_code == 303 and signed.headers["location"] == "/ui/models"
            cookie = next(
                c
                for c in signed.headers.get_list("set-cookie")
                if c.startswith("edgeloop_session=")
            )
            attrs = {a.strip().split("=")[0].lower() for a in cookie.split(";")[1:]}
            assert {"httponly", "max-age", "path", "samesite"} <= attrs
            assert "samesite=strict" in cookie.lower() and "path=/ui" in cookie.lower()
            assert "secure" in attrs  # over TLS (plain HTTP: without, or browsers drop it)
            page = client.get("/ui/models")
            assert page.status_code == 200
            # Signing out needs the session's CSRF token, and ends the session server-side.
            assert client.post("/ui/sign-out", data={}).status_code == 403
            out = client.post("/ui/sign-out", data={"csrf": _csrf(page.text)})
            assert out.status_code == 303 and out.headers["location"] == "/ui/sign-in"
            session = cookie.split(";")[0].split("=", 1)[1]
            client.cookies.set("edgeloop_session", session, path="/ui")
            replay = client.get("/ui/models")
            assert f"edgeloop_session={session}" in replay.request.headers["cookie"]
            assert replay.status_code == 303  # the old cookie, sent again, is no session
            assert replay.headers["location"].startswith("/ui/sign-in")

        with httpx.Client(base_url=cp.url, timeout=30, verify=verify) as guesser:
            csrf, answers = _form(guesser), []
            # Failures drain at 1/s (control/throttle.py): guess until refused, boundedly.
            while len(answers) < 300:
                answer = guesser.post("/ui/sign-in", data={"token": "guess", "csrf": csrf})
                if answer.status_code == 429:
                    break
                answers.append(answer)
                csrf = _csrf(answer.text)  # each answer is the form again, with a fresh value
            assert len(answers) >= 30 and {a.status_code for a in answers} == {401}
            assert all("That token is not valid." in a.text for a in answers)
            # Over the limit: refused before the token is looked at, the right one too.
            late = guesser.post("/ui/sign-in", data={"token": ADMIN, "csrf": csrf})
            assert late.status_code == 429 and int(late.headers["retry-after"]) >= 1
            assert "edgeloop_session" not in late.headers.get("set-cookie", "")
