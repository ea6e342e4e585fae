"""The rollout timeline, the outbox backlog, data sets and the label queue in Chromium, against a
real control plane and a real agent, the control plane on PostgreSQL when
``EDGELOOP_TEST_POSTGRES_URL`` is set (a fresh schema: tests/postgres.py), else on SQLite.

The agent's report carries its outbox backlog and the control plane stores it; the rollout's
page draws the node's updater steps from the telemetry the agent shipped; a stored data set
version shows its provenance and counts, sits in the label queue and its tasks download as the
CLI writes them. Screenshots go where tests/browser/dashboard_world.py says (docs/ui with
EDGELOOP_UI_SHOTS=docs/ui).
"""

from __future__ import annotations

import csv
import os
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.browser.dashboard_world import SHOTS, World, chromium, launched, manifest
from tests.postgres import PG_ENV, fresh_schema
from tests.tiny_models import make_linear_onnx

from edgeloop.control.throttle import PER_S_ENV
from edgeloop.core.settings import Settings
from edgeloop.data.dataset import Modality
from edgeloop.data.samples import UNLABELLED, SampleSet
from edgeloop.registry.dataset_library import DatasetLibrary
from edgeloop.registry.datasets import Provenance
from edgeloop.sdk.local_fleet import up

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fleet_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[World, str]]:
    """One agent, a completed rollout, a stored data set version; (world, database kind). The
    world's browser is None without Debian's chromium or playwright (the test then skips after
    checking the report)."""
    folder = tmp_path_factory.mktemp("ui-data")
    schema = fresh_schema("edgeloop_ui") if os.environ.get(PG_ENV) else None
    db_url = next(schema) if schema is not None else None
    try:
        args = ["--db", db_url] if db_url else []
        agent = ["--poll-s", "0.5", "--metrics-every-s", "1"]
        # Failures drain at 1 per 50 s (1/s by default): the 429 checks at the end stay refused
        # however slowly Chromium gets to them on a loaded machine.
        env = {PER_S_ENV: "0.02"}
        with (
            up(folder, 1, agent_args=agent, control_args=args, env=env) as fleet,
            fleet.admin() as admin,
        ):
            v1 = admin.publish_model(make_linear_onnx(folder / "v1.onnx", seed=1), manifest("lin"))
            plan = {"waves": ["100%"], "soak_s": 0, "watch_s": 0, "wave_timeout_s": 120}
            rollout = admin.deploy({"name": "lin-data", "model": v1["ref"], "plan": plan})
            done = admin.wait_rollout(rollout["rollout_id"], {"COMPLETED", "HALTED"}, 120)
            assert done["state"] == "COMPLETED", done["events"][-3:]
            _store_dataset(Settings.load(folder / "control", db_url), fleet.agents[0].name)
            world = World(fleet, v1, v1, rollout["rollout_id"], None)
            kind = "postgresql" if db_url else "sqlite"
            try:
                executable = chromium()
            except pytest.skip.Exception:
                yield world, kind  # the test checks the report, then skips
                return
            with launched(executable) as world.browser:
                yield world, kind
    finally:
        if schema is not None:
            next(schema, None)  # drops the schema


def _store_dataset(settings: Settings, node: str) -> None:
    """caps:1: six captured rows of lin:1, three labelled (what `edgeloop data capture` makes)."""
    x = np.arange(24, dtype=np.float32).reshape(6, 4)
    y = np.array([0, 2, UNLABELLED, UNLABELLED, 1, UNLABELLED], np.int64)
    ids = tuple(f"req-{i}" for i in range(6))
    samples = SampleSet(x, y, ids, ("a", "b", "<b>c</b>"), Modality.TABULAR)
    span = (datetime(2026, 12, 7, 1, tzinfo=UTC), datetime(2026, 12, 7, 2, tzinfo=UTC))
    with DatasetLibrary.open(settings) as library:
        library.add("caps", samples, Provenance((node,), "lin:1", ("uncertain",), span))


def _shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def _reported(world: World) -> dict[str, Any]:
    with world.fleet.admin() as admin:
        (node,) = admin.nodes()
    return dict(node.get("reported") or {})


def test_the_backlog_report_then_timeline_data_sets_and_label_queue_in_chromium(
    fleet_world: tuple[World, str], tmp_path: Path
) -> None:
    """One test, not two: under ``pytest -n 2`` two tests of a module may land on both workers
    and start a fleet each. The report is checked first, with or without a browser."""
    world, kind = fleet_world
    # The agent's report carries its outbox backlog; the control plane stores it as sent.
    deadline = time.monotonic() + 30
    while not isinstance((outbox := _reported(world).get("outbox")), dict):
        assert time.monotonic() < deadline, f"no outbox in the stored report ({kind})"
        time.sleep(0.5)
    assert isinstance(outbox["rows"], int) and outbox["rows"] >= 0
    assert isinstance(outbox["bytes"], int) and outbox["bytes"] >= 0
    assert outbox["rows"] == sum(k["rows"] for k in outbox["kinds"].values())
    assert outbox["bytes"] == sum(k["bytes"] for k in outbox["kinds"].values())
    assert set(outbox["kinds"]) <= {"sample", "capture", "metrics", "event", "dropped"}
    ages = [k["oldest_age_s"] for k in outbox["kinds"].values()]
    assert outbox["oldest_age_s"] == (max(ages) if ages else None)

    if world.browser is None:
        chromium()  # skips here, saying what is missing (the report was checked above)
    expect = pytest.importorskip("playwright.sync_api").expect
    context, page = world.sign_in(world.fleet.admin_token)
    expect(page.get_by_role("columnheader", name="Outbox backlog")).to_be_visible()
    page.get_by_label("Outbox backlog").select_option("waiting")  # htmx swaps the results
    expect(page.get_by_role("table")).to_contain_text("matching nodes")
    expect(page).to_have_url(re.compile(r"backlog=waiting"))
    node = world.fleet.agents[0].name
    page.goto(f"{world.url}/ui/fleet")
    page.get_by_role("link", name=node).click()
    expect(page.get_by_role("table", name=re.compile("outbox"))).to_contain_text("all kinds")

    # The rollout's timeline: the node's updater steps, shipped as telemetry events.
    page.goto(f"{world.url}/ui/rollouts/{world.first_rollout}")
    chart = page.locator("svg.timeline")
    expect(chart).to_have_attribute("aria-label", re.compile(r"1 reached node"))
    summary = page.get_by_text("The timeline as a table")
    summary.focus()
    page.keyboard.press("Enter")  # the disclosure opens from the keyboard
    steps = page.get_by_role("table", name=re.compile("Every step of the timeline"))
    for _ in range(40):  # the events reach the control plane with the agent's next shipment
        if "COMMIT" in steps.inner_text():
            break
        time.sleep(0.5)
        page.reload()
        page.get_by_text("The timeline as a table").click()
    for state in ("STAGE", "SELF_TEST", "ACTIVATE", "WATCH", "COMMIT", "WAVE", "COMPLETED"):
        expect(steps).to_contain_text(state)
    expect(chart.locator("rect title").first).to_contain_text("Rollout:")
    _shot(page, "rollout-timeline")

    # Data sets, by the keyboard from the navigation; the version's provenance and counts.
    nav = page.get_by_role("navigation", name="Dashboard sections")
    nav.get_by_role("link", name="Data sets").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Data sets", exact=True)).to_be_visible()
    page.get_by_role("link", name="caps:1").click()
    for fact in ("lin:1", "uncertain", node, "2026-12-07T01:00:00+00:00"):
        expect(page.locator("main")).to_contain_text(fact)
    per_class = page.get_by_role("table", name="Labelled samples per class")
    expect(per_class).to_contain_text("<b>c</b>")  # a class name shown as text, not markup
    _shot(page, "dataset")
    with page.expect_download() as got:
        page.get_by_role("link", name="CSV").first.click()
    saved = tmp_path / "tasks.csv"
    got.value.save_as(saved)
    with saved.open() as f:
        assert [r["sample_id"] for r in csv.DictReader(f)] == ["req-2", "req-3", "req-5"]

    page.goto(f"{world.url}/ui/labels")
    queue = page.get_by_role("table", name=re.compile("unlabelled samples, most first"))
    expect(queue.get_by_role("row", name=re.compile("caps:1"))).to_contain_text("3")
    _shot(page, "label-queue")

    # A source over the failure limit (control/throttle.py) is answered 429 with Retry-After:
    # under /ui as an HTML page, to htmx with an empty body that app.js turns into a status line.
    page.goto(f"{world.url}/ui/fleet")
    guesser = world.browser.new_context()
    answer = guesser.request.get(f"{world.url}/ui/sign-in")
    for _ in range(300):  # failures drain at 1/s: guess until refused, boundedly
        found = re.search(r'name="csrf" value="([^"]+)"', answer.text())
        assert found is not None, answer.text()[:300]
        answer = guesser.request.post(
            f"{world.url}/ui/sign-in", form={"token": "guess", "csrf": found.group(1)}
        )
        if answer.status == 429:
            break
        assert answer.status == 401
    assert answer.status == 429 and int(answer.headers["retry-after"]) >= 1
    assert (
        answer.headers["content-type"].startswith("text/html") and "try again in" in answer.text()
    )
    guesser.close()
    page.get_by_label("Outbox backlog").select_option("waiting")  # an htmx request, refused
    expect(page.locator("#refused")).to_contain_text("Refused (HTTP 429): try again in")
    refused = page.goto(f"{world.url}/ui/labels")
    assert refused is not None and refused.status == 429
    expect(page.get_by_role("alert")).to_contain_text("too many wrong credentials")
    context.close()
