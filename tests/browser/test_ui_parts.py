"""The dashboard's pure parts, without a browser or a server: escaping, the fleet query's
checks, health words, where sign-in may send a browser next."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np
import pytest
from starlette.requests import Request
from starlette.responses import Response

from edgeloop.control import experiment_store, fl_rounds
from edgeloop.control.experiments import PROXY_CAVEAT
from edgeloop.control.fl_store import DpOptions, TaskSpec
from edgeloop.control.plane import ControlPlane
from edgeloop.control.ui import security, sessions
from edgeloop.control.ui.fleet_view import FleetQuery, Seen, health
from edgeloop.control.ui.html import Html, escape, render, url
from edgeloop.control.ui.pages_experiments import ExperimentPages, arms, decision
from edgeloop.control.ui.pages_federated import FederatedPages
from edgeloop.control.ui.pages_jobs import JobPages
from edgeloop.control.ui.routes import Dashboard, _next
from edgeloop.control.ui.sessions import Role
from edgeloop.control.ui.widgets import table
from edgeloop.core.errors import ConfigError

EVIL = "<script>alert(1)</script>\"'&"


def test_every_slot_and_cell_is_escaped_unless_built_here() -> None:
    page = render("planned.html", what=EVIL, detail=Html("<em>ok</em>"))
    assert (
        "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#x27;&amp;" in page
    )
    assert "<em>ok</em>" in page
    cells = table(EVIL, (EVIL,), [(EVIL, Html("<b>kept</b>"))])
    assert "<script>" not in cells and cells.count("&lt;script&gt;") == 3 and "<b>kept</b>" in cells
    assert escape(None) == "" and escape(Html("<i>")) == "<i>"
    assert url("nodes", "a/b?c=<d>", q='"x"') == "/ui/nodes/a%2Fb%3Fc%3D%3Cd%3E?q=%22x%22"


def test_a_missing_slot_is_a_bug_not_an_empty_string() -> None:
    with pytest.raises(KeyError):
        render("planned.html", what="x")


@pytest.mark.parametrize(
    ("params", "bad"), [({"seen": "<b>"}, "seen"), ({"limit": "10000"}, "limit")]
)
def test_a_bad_fleet_filter_names_the_field_and_the_allowed_values(
    params: dict[str, str], bad: str
) -> None:
    with pytest.raises(ConfigError, match=f"^{bad} .*expected one of"):
        FleetQuery.from_params(params)


def test_the_fleet_query_keeps_a_keyset_cursor_only_when_whole() -> None:
    q = FleetQuery.from_params(
        {"q": "  a%_b  ", "seen": "silent", "after_name": "n", "after_id": "i"}
    )
    assert (q.search, q.seen, q.after, q.limit) == ("a%_b", Seen.SILENT, ("n", "i"), 50)
    assert FleetQuery.from_params({"after_name": "n"}).after is None


def test_health_words_from_a_report() -> None:
    now = 1000.0
    assert health(None, None, now)[0] == "never reported"
    assert health({}, now - 61, now)[0] == "silent"
    assert health({"updater": {"error": "disk full"}}, now, now) == ("failing", "disk full")
    assert health({"health": {"error_rate": 0.5, "requests": 4}}, now, now)[0] == "errors"
    assert health({"updater": {"state": "VERIFY"}}, now, now)[0] == "updating"
    assert (
        health({"updater": {"state": "IDLE"}, "health": {"error_rate": None}}, now, now)[0] == "ok"
    )


@pytest.mark.parametrize(
    ("given", "goes"),
    [
        ("/ui/models", "/ui/models"),
        ("https://evil.example/ui/", "/ui/fleet"),
        ("//evil.example/ui/", "/ui/fleet"),
        ("/ui/\\\\evil", "/ui/fleet"),
        ("/api/v1/nodes", "/ui/fleet"),
    ],
)
def test_sign_in_sends_a_browser_only_to_a_dashboard_page(given: str, goes: str) -> None:
    request = Request({"type": "http", "query_string": b"", "headers": []})
    assert _next(request, given) == goes


# --- the experiment, federated-task and job pages, in process on a real control plane -------


@dataclass
class Plane:
    """A control plane on a temporary SQLite home, its dashboard, and two sessions' cookies."""

    plane: ControlPlane
    ui: Dashboard
    admin: str
    reader: str
    admin_csrf: str

    def call(self, handler: Any, path: str, cookie: str | None, form: str = "") -> Response:
        """``handler`` behind the dashboard's session guard, as the router would call it."""
        method, params = ("POST" if form else "GET"), _params(path)
        headers = [(b"content-type", b"application/x-www-form-urlencoded")]
        if cookie:
            headers.append((b"cookie", f"{security.COOKIE}={cookie}".encode()))
        scope = {
            "type": "http", "method": method, "path": path, "query_string": b"",
            "headers": headers, "path_params": params, "scheme": "http",
            "server": ("testserver", 80), "root_path": "",
        }  # fmt: skip

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": form.encode(), "more_body": False}

        return asyncio.run(self.ui.guarded(handler)(Request(scope, receive)))


def _params(path: str) -> dict[str, str]:
    parts = path.split("/")[2:]  # /ui/<section>/<id>[/<action>]
    keys = {"experiments": "eid", "federated": "tid", "jobs": "job_id"}
    return {keys[parts[0]]: unquote(parts[1])} if len(parts) > 1 else {}


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Plane]:
    plane, _ = ControlPlane.open(tmp_path / "home")
    try:
        ui = Dashboard(plane)
        admin, admin_session = sessions.start(plane.db, Role.ADMIN)
        reader, _ = sessions.start(plane.db, Role.READER)
        yield Plane(plane, ui, admin, reader, admin_session.csrf)
    finally:
        plane.close()


def _text(r: Response) -> str:
    return bytes(r.body).decode()


def test_experiment_pages_show_arms_decision_and_history_escaped(home: Plane) -> None:
    pages = ExperimentPages(home.plane)
    config = {
        "metric": "accuracy",
        "alpha": 0.05,
        "min_effect": 0.02,
        "horizon_per_arm": 1000,
        "latency_threshold_ms": 100.0,
        "plan": {},
        "mixing": "normal",
        "mode": "split",
    }
    eid = home.plane.write("test", lambda c: experiment_store.insert(
        c, EVIL, "m", 1, 2, 0.5, config, []))  # fmt: skip
    listed = home.call(pages.list, "/ui/experiments", home.admin)
    assert listed.status_code == 200 and eid in _text(listed)
    shown = home.call(pages.detail, f"/ui/experiments/{eid}", home.reader)
    page = _text(shown)
    assert shown.status_code == 200 and "<script>alert" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    for part in ("Arms", "Decision and its evidence", "State history", "created on 0 node(s)"):
        assert part in page, part
    # The evidence table from a verdict as the sequential test stores it.
    primary = {"metric": "accuracy", "champion_n": 400, "challenger_n": 410, "effect": 0.031,
               "cs_low": 0.004, "cs_high": 0.058, "p_value": 0.012}  # fmt: skip
    verdict = {"decision": "promote_treatment", "primary": primary, "guardrails": []}
    evidence = decision({"decision": "promote_treatment", "evidence": verdict})
    assert "[0.004, 0.058]" in evidence and "promote_treatment" in evidence
    missing = home.call(pages.detail, "/ui/experiments/exp-nope", home.admin)
    assert missing.status_code == 404 and "exp-nope" in _text(missing)
    assert "Caveat" not in page and "(proxy)" not in _text(listed)  # accuracy: no caveat
    assert "<dd>normal</dd>" in page  # the mixing stored with it


def test_a_confidence_experiment_page_shows_the_caveat_and_each_arms_mean(home: Plane) -> None:
    pages = ExperimentPages(home.plane)
    config = {"metric": "confidence", "alpha": 0.05, "min_effect": 0.02, "horizon_per_arm": 1000,
              "latency_threshold_ms": 100.0, "plan": {}, "mode": "split"}  # fmt: skip
    eid = home.plane.write("test", lambda c: experiment_store.insert(
        c, "conf", "m", 1, 2, 0.5, config, []))  # fmt: skip
    listed = _text(home.call(pages.list, "/ui/experiments", home.reader))
    assert "confidence (proxy)" in listed
    page = _text(home.call(pages.detail, f"/ui/experiments/{eid}", home.reader))
    assert f'<p class="note">Caveat: {PROXY_CAVEAT}</p>' in page
    assert f"<dt>Caveat</dt><dd>{PROXY_CAVEAT}</dd>" in page  # beside the decision
    assert "confidence (proxy)" in page and "normal (stored without one)" in page
    # Each arm's mean confidence where its nodes reported some; n/a where none was.
    reported = {"version": 1, "requests": 40, "confidence_rows": 40, "confidence_mean": 0.8125}
    shown = arms({"champion": reported, "challenger": {"version": 2, "requests": 40,
                                                       "confidence_rows": 0}})  # fmt: skip
    assert "Confidence mean" in shown
    assert "<td>n/a</td><td>0.812 over 40 rows</td></tr>" in shown  # the champion's last cell
    assert "<td>n/a</td><td>n/a</td></tr></tbody>" in shown  # the challenger's: none reported


def test_federated_pages_show_rounds_participants_and_epsilon_escaped(home: Plane) -> None:
    pages = FederatedPages(home.plane)
    spec = TaskSpec(model="digits-mlp", register_as=EVIL, dp=DpOptions(target_epsilon=8.0))
    now = time.time()
    rounds = [{"round": 1, "selected": [EVIL, "n2"], "participants": [EVIL], "dropouts": ["n2"],
               "rejected": {}, "accuracy": 0.8125, "loss": 0.52, "eval_samples": 64,
               "epsilon": 1.25, "started_at": now, "closed_at": now}]  # fmt: skip

    def create(conn: Any) -> str:
        tid = fl_rounds.create(conn, spec, np.zeros(8), now)
        fl_rounds.save_task(conn, tid, now, history=json.dumps(rounds))
        return tid

    tid = home.plane.write("test", create)
    listed = _text(home.call(pages.list, "/ui/federated", home.reader))
    assert tid in listed and "1.25" in listed
    shown = home.call(pages.detail, f"/ui/federated/{tid}", home.admin)
    page = _text(shown)
    assert shown.status_code == 200 and "<script>alert" not in page
    assert (
        page.count("&lt;script&gt;alert(1)&lt;/script&gt;") == 3
    )  # registered as, participant, spec
    assert "0.812" in page and "0.52" in page and "1.25 at delta 1e-05, target 8" in page
    assert "n2" in page and f"/ui/federated/{tid}/rounds.json" in page
    cols = json.loads(
        bytes(home.call(pages.rounds, f"/ui/federated/{tid}/rounds.json", home.reader).body)
    )
    assert (cols["t"], cols["accuracy"], cols["loss"]) == ([1], [0.8125], [0.52])
    assert home.call(pages.detail, "/ui/federated/nope", home.admin).status_code == 404
    # The list keeps decoded rows per updated_at: a saved round shows at once.
    later = [*rounds, {**rounds[0], "round": 2, "epsilon": 2.75, "accuracy": 0.875}]
    home.plane.write(
        "test", lambda c: fl_rounds.save_task(c, tid, now + 1, history=json.dumps(later))
    )
    again = _text(home.call(pages.list, "/ui/federated", home.reader))
    assert "2.75" in again and "0.875" in again and "1.25" not in again


def test_job_page_cancels_only_with_the_csrf_token_and_the_admin_role(home: Plane) -> None:
    pages = JobPages(home.plane)
    job = pages.store.create("retrain", EVIL, {"model": EVIL})
    pages.store.start(job.id, {})  # running, its process not known: cancel is a request
    pages.store.log(job.id, f"epoch 1 {EVIL}")
    pages.store.progress(job.id, "train", 0.4)
    path = f"/ui/jobs/{job.id}"
    page = _text(home.call(pages.detail, path, home.admin))
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert 'value="0.400"' in page and "Cancel job" in page and home.admin_csrf in page
    assert "Cancel job" not in _text(home.call(pages.detail, path, home.reader))
    assert "Retraining jobs" in _text(home.call(pages.list, "/ui/jobs", home.reader))
    # A read-only session, and an admin one without the token, are refused; nothing changes.
    reader_csrf = sessions.find(home.plane.db, home.reader)
    assert reader_csrf is not None
    refused = home.call(pages.cancel, path + "/cancel", home.reader, f"csrf={reader_csrf.csrf}")
    assert refused.status_code == 403 and "read-only" in _text(refused)
    forged = home.call(pages.cancel, path + "/cancel", home.admin, "csrf=forged")
    assert forged.status_code == 403 and "CSRF" in _text(forged)
    assert pages.store.get(job.id).cancel_requested is False
    done = home.call(pages.cancel, path + "/cancel", home.admin, f"csrf={home.admin_csrf}")
    assert done.status_code == 303 and done.headers["location"] == path
    assert pages.store.get(job.id).cancel_requested is True
    assert home.call(pages.detail, "/ui/jobs/nope", home.admin).status_code == 404
    assert home.call(pages.detail, path, None).status_code == 303  # no session: sign in first
    pages.store.close()
