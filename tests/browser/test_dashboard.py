"""The dashboard in Chromium against a real local fleet: a control plane and two agents.

Sign in, see the running fleet, start a rollout from the page and watch it complete, roll it
back from the page and see the agents return to the old version; a read-only sign-in sees and
cannot act; a post without the CSRF token changes nothing; HTML in a node's name and labels is
shown as text, never run; every page is reachable by keyboard and its controls are labelled.
Each page's screenshot is taken; with EDGELOOP_UI_SHOTS=docs/ui it is written there (docs/ui.md
shows them), else to a temporary folder.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from typing import Any

import pytest
from tests.browser.dashboard_world import READER_TOKEN, SHOTS, World, active_sha

expect = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (the dev extra has it)"
).expect

pytestmark = pytest.mark.slow

PAGES = ("fleet", "rollouts", "models", "monitoring", "experiments", "federated", "jobs")


def _shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def no_page_answers_without_a_session(running: World) -> None:
    context = running.browser.new_context()
    page = context.new_page()
    for path in ("/ui/fleet", f"/ui/rollouts/{running.first_rollout}", "/ui/models"):
        page.goto(running.url + path)
        expect(page).to_have_url(re.compile(r"/ui/sign-in\?next="))
        expect(page.get_by_label("Access token")).to_be_visible()
    _shot(page, "sign-in")
    # A made-up (or tampered) cookie is no session either.
    context.add_cookies([{"name": "edgeloop_session", "value": secrets.token_urlsafe(32),
                          "url": running.url + "/ui"}])  # fmt: skip
    page.goto(running.url + "/ui/fleet")
    expect(page).to_have_url(re.compile(r"/ui/sign-in"))
    # A wrong token: 401, the same words whatever was typed.
    page.get_by_label("Access token").fill("not-the-token")
    with page.expect_navigation() as answer:
        page.get_by_role("button", name="Sign in").click()
    assert answer.value is not None and answer.value.status == 401
    expect(page.get_by_role("alert")).to_have_text("That token is not valid.")
    context.close()


def an_expired_session_is_sent_to_sign_in(running: World) -> None:
    context, page = running.sign_in(running.fleet.admin_token)
    cookie = next(c["value"] for c in context.cookies() if c["name"] == "edgeloop_session")
    with running.db() as db:  # the session's row ages past its expiry in the real database
        db.execute(
            "UPDATE control_ui_sessions SET expires_at = 1 WHERE session_hash = ?",
            (hashlib.sha256(cookie.encode()).hexdigest(),),
        )
    page.goto(running.url + "/ui/models")
    expect(page).to_have_url(re.compile(r"/ui/sign-in\?next=%2Fui%2Fmodels"))
    context.close()


def admin_rolls_out_from_the_page_and_rolls_back(running: World) -> None:
    page = running.admin_page()
    page.on("dialog", lambda dialog: dialog.accept())  # the "Rollback?" confirmation
    rows = page.locator("#fleet-results tbody tr")
    expect(rows).to_have_count(2)
    for name in ("node-1", "node-2"):
        expect(page.get_by_role("row", name=re.compile(rf"^{name} "))).to_contain_text(
            running.v1["ref"]
        )
    _shot(page, "fleet")
    page.get_by_role("link", name="node-1").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Node node-1")
    # The chart is drawn by app.js from the node's metrics (agents report every second here),
    # under the page's CSP: a uPlot canvas, or the note that none came in the last hour.
    chart = page.locator("div.chart")
    expect(chart.locator("canvas, p.note:has-text('No metrics report')").first).to_be_visible()
    _shot(page, "node")

    page.get_by_role("navigation", name="Dashboard sections").get_by_role(
        "link", name="Rollouts"
    ).click()
    page.get_by_label("Deployment name").fill("lin-prod")
    page.get_by_label("Model version").select_option(running.v2["ref"])
    page.get_by_label("Waves").fill("1,100%")
    page.get_by_label("Soak per wave (s)").fill("0")
    page.get_by_label("Watch per node (s)").fill("0")
    page.get_by_role("button", name="Start rollout").click()
    expect(page).to_have_url(re.compile(r"/ui/rollouts/[^/]+$"))
    rid = page.url.rsplit("/", 1)[1]
    state = page.locator("#rollout-live dd .badge").first
    expect(state).to_have_text("COMPLETED", timeout=120_000)  # htmx re-reads the part
    # Two waves, each entered once, as the API's own record says.
    with running.fleet.admin() as admin:
        done = admin.rollout(rid)
        assert [e["state"] for e in done["events"]].count("WAVE") == 2
        assert all(active_sha(n) == running.v2["artifact_sha256"] for n in admin.nodes())
    expect(page.locator("ol.waves li")).to_have_count(2)
    expect(page.get_by_role("table", name="Events, newest first")).to_contain_text("WAVE")
    _shot(page, "rollout")

    page.get_by_role("button", name="Rollback").click()
    expect(state).to_have_text("ROLLED_BACK", timeout=60_000)
    with running.fleet.admin() as admin:
        deadline = time.monotonic() + 90
        while not all(active_sha(n) == running.v1["artifact_sha256"] for n in admin.nodes()):
            assert time.monotonic() < deadline, [active_sha(n) for n in admin.nodes()]
            time.sleep(0.3)
    page.goto(running.url + "/ui/fleet")
    for name in ("node-1", "node-2"):
        expect(page.get_by_role("row", name=re.compile(rf"^{name} "))).to_contain_text(
            running.v1["ref"]
        )
    page.goto(running.url + "/ui/rollouts")
    _shot(page, "rollouts")
    page.close()


def read_only_sees_everything_and_cannot_act(running: World) -> None:
    context, page = running.sign_in(READER_TOKEN)
    expect(page.locator("#fleet-results tbody tr")).to_have_count(2)
    page.goto(f"{running.url}/ui/rollouts/{running.first_rollout}")
    expect(page.locator("#rollout-live")).to_contain_text("Read-only sign-in")
    expect(page.get_by_role("button", name="Rollback")).to_have_count(0)
    # Posting the action anyway (with this session's valid CSRF token) is refused.
    csrf = page.locator("form.who input[name=csrf]").get_attribute("value")
    answer = context.request.post(
        f"{running.url}/ui/rollouts/{running.first_rollout}/rollback", form={"csrf": csrf}
    )
    assert answer.status == 403, answer.text()
    assert "read-only sign-in cannot roll this rollout back" in answer.text()
    with running.fleet.admin() as admin:
        assert admin.rollout(running.first_rollout)["state"] == "COMPLETED"
    context.close()


def a_post_without_the_csrf_token_is_refused(running: World) -> None:
    context = running.admin_context()
    url = f"{running.url}/ui/rollouts/{running.first_rollout}/rollback"
    for form in ({}, {"csrf": "forged-" + secrets.token_urlsafe(16)}):
        answer = context.request.post(url, form=form)
        assert answer.status == 403, answer.text()
        assert "no valid CSRF token" in answer.text()
    with running.fleet.admin() as admin:
        assert admin.rollout(running.first_rollout)["state"] == "COMPLETED"


def html_in_a_node_name_and_labels_is_shown_as_text(running: World) -> None:
    evil = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
    with running.fleet.admin() as admin:
        node = next(n for n in admin.nodes() if n["name"] == "node-2")
        admin.label(node["node_id"], {"fleet": "local", "note": evil})
    with running.db() as db:  # a name the API refuses, written straight into the database
        db.execute("UPDATE control_nodes SET name = ? WHERE node_id = ?", (evil, node["node_id"]))
    try:
        page = running.admin_page()
        page.goto(f"{running.url}/ui/fleet")
        expect(page.locator("#fleet-results")).to_contain_text("<script>window.__pwned = 1")
        page.goto(f"{running.url}/ui/nodes/{node['node_id']}")
        expect(page.locator("main")).to_contain_text("note=<script>window.__pwned = 1")
        assert page.evaluate("window.__pwned") is None
        assert page.locator("main script, main img").count() == 0
        page.close()
    finally:
        with running.db() as db:
            db.execute("UPDATE control_nodes SET name = 'node-2' WHERE node_id = ?",
                       (node["node_id"],))  # fmt: skip


def every_page_works_by_keyboard_with_labelled_controls(running: World) -> None:
    page = running.admin_page()
    refused: list[str] = []
    page.on("console", lambda m: refused.append(m.text) if "Content Security" in m.text else None)
    for key in PAGES:
        answer = page.goto(f"{running.url}/ui/{key}")
        assert answer is not None and answer.status == 200
        csp = answer.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert page.locator("script:not([src])").count() == 0
        unlabelled = page.evaluate(
            """() => [...document.querySelectorAll('input, select, textarea, button')]
                 .filter(e => e.type !== 'hidden')
                 .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
                              && !(e.tagName === 'BUTTON' && e.textContent.trim()))
                 .map(e => e.outerHTML)"""
        )
        assert unlabelled == [], (key, unlabelled)
        # The first Tab lands on "Skip to content"; Enter moves focus to the page's main part.
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.textContent") == "Skip to content"
        page.keyboard.press("Enter")
        assert page.evaluate("document.activeElement.id") == "main"
        nav = page.get_by_role("navigation", name="Dashboard sections")
        expect(nav.locator("[aria-current=page]")).to_have_count(1)
        if key in ("models", "monitoring", "experiments"):
            _shot(page, key)
    # The fleet's search box filters by keyboard alone (htmx swaps the results in).
    # Search by node-1's id: the box matches names and ids, and ids are random hex, so typing
    # "node-1" also matched a node whose id happened to start with "node-1" (one CI run).
    with running.fleet.admin() as admin:
        node_1 = next(n["node_id"] for n in admin.nodes() if n["name"] == "node-1")
    page.goto(f"{running.url}/ui/fleet")
    page.get_by_label("Search name or id").focus()
    page.keyboard.type(node_1)
    expect(page.locator("#fleet-results tbody tr")).to_have_count(1)
    expect(page.locator("#fleet-results tbody tr")).to_contain_text("node-1")
    expect(page).to_have_url(re.compile(f"q={node_1}"))
    page.goto(f"{running.url}/ui/models")
    page.get_by_role("link", name=running.v1["ref"]).focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Model {running.v1['ref']}")
    _shot(page, "model")
    node = running.fleet.agents[0].name
    page.goto(f"{running.url}/ui/fleet")
    page.get_by_role("link", name=node).click()
    expect(page.locator("div.chart canvas, div.chart p.note").first).to_be_visible()
    assert refused == [], refused  # nothing the page or its scripts did broke the policy
    page.close()


def test_the_dashboard_in_chromium_against_a_running_fleet(running: World) -> None:
    """One test, steps in order: the fleet, the agents and Chromium start once (with
    ``pytest -n 2`` separate tests could each start their own on another worker)."""
    for step in (
        no_page_answers_without_a_session,
        an_expired_session_is_sent_to_sign_in,
        admin_rolls_out_from_the_page_and_rolls_back,
        read_only_sees_everything_and_cannot_act,
        a_post_without_the_csrf_token_is_refused,
        html_in_a_node_name_and_labels_is_shown_as_text,
        every_page_works_by_keyboard_with_labelled_controls,
    ):
        step(running)
