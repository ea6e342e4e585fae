"""The model page's lineage graph and Pareto plot, and the monitoring page's drift over time, in
Chromium against a running fleet (tests/browser/conftest.py: one per module).

A small known lineage is published through the admin API (tiny real ONNX files; the
measurements in their manifests are this test's inputs, the pages must show exactly them), and
node-1 sends known monitoring telemetry with its own node token over the agents' wire; the test
checks the graph's boxes, links and edge labels, the Pareto front of the known set, and the drift
chart's columns and drawn canvas.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from tests.browser.dashboard_world import World, manifest
from tests.tiny_models import make_linear_onnx

expect = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (the dev extra has it)"
).expect

pytestmark = pytest.mark.slow


def _measured(latency: float, accuracy: float | None) -> dict[str, Any]:
    return {
        "model": "kws", "engine": "onnxruntime", "provider": "CPUExecutionProvider",
        "batch_size": 1, "runs": 50, "latency_ms": {"p50": latency, "p90": latency,
        "p99": latency}, "throughput_per_s": 1000 / latency, "peak_rss_mb": None,
        "size_bytes": 1, "accuracy": accuracy,
        "accuracy_split": None if accuracy is None else "test split", "power_w": None,
        "power_source": "no meter", "cpu": "test", "threads": 1,
    }  # fmt: skip


# (name, parent, recipe, measurement): every file is the same tiny model, so sizes are equal and
# the front is decided by latency and accuracy: kws:2 beats kws:1 (as fast, more accurate),
# kws:1 beats kws-fp16:1; kws-int8:1 is fastest; kws-tflite:1 has no measurement.
LINEAGE = (
    ("kws", None, {}, _measured(10.0, 0.90)),
    ("kws-int8", "kws:1", {"recipe": "static-int8", "objective": "latency"}, _measured(5.0, 0.89)),
    ("kws-fp16", "kws:1", {"optimize": {"method": "fp16"}}, _measured(12.0, 0.90)),
    ("kws", "kws:1", {"retrain": {"job_id": "feedbeef00000000"}}, _measured(10.0, 0.93)),
    ("kws-tflite", "kws-int8:1", {"target": "tflite-int8"}, None),
)


def _publish(running: World) -> None:
    folder = running.fleet.folder
    with running.fleet.admin() as admin:
        for i, (name, parent, recipe, measured) in enumerate(LINEAGE):
            doc = manifest(name).to_dict()
            doc.update(parent=parent, recipe=recipe, measurements=[measured] if measured else [])
            admin.publish_model(make_linear_onnx(folder / f"kws{i}.onnx", seed=10 + i), doc)


def _send_drift(running: World) -> float:
    """node-1's monitoring telemetry for kws:1: three metrics reports (drift ratio 0.4, 0.5,
    1.7; windowed accuracy 0.9, 0.85, 0.6) and one drift alarm. Returns the alarm's time."""
    agent = next(a for a in running.fleet.agents if a.name == "node-1")
    who = json.loads((agent.home / "agent" / "identity.json").read_text())
    now = time.time()

    def at(ago: float) -> str:
        return datetime.fromtimestamp(now - ago, UTC).isoformat()

    def metrics(ago: float, ratio: float, acc: float) -> dict[str, Any]:
        watched = {"version": "1", "state": "active", "samples_seen": 100,
                   "drifting": ratio > 1, "drift_ratio": {"input": ratio},
                   "performance": {"labelled": 50, "accuracy": acc}}  # fmt: skip
        payload = {"model": "kws", "model_version": "1", "requests": 10, "errors": 0,
                   "window_s": 10.0, "monitoring": {"kws": watched}}  # fmt: skip
        return {
            "id": str(uuid.uuid4()),
            "kind": "metrics",
            "created_at": at(ago),
            "payload": payload,
        }

    alarm = {"id": str(uuid.uuid4()), "kind": "event", "created_at": at(15), "payload": {
        "type": "drift", "model": "kws", "model_version": "1", "reason": "input"}}  # fmt: skip
    items = [metrics(40, 0.4, 0.9), metrics(30, 0.5, 0.85), alarm, metrics(10, 1.7, 0.6)]
    answer = httpx.post(
        f"{running.url}/api/v1/nodes/{who['node_id']}/telemetry",
        json={"items": items},
        headers={"Authorization": f"Bearer {who['node_token']}"},
        timeout=30,
    )
    assert answer.status_code == 200 and answer.json()["accepted"] == 4, answer.text
    return now - 15


def test_lineage_pareto_and_drift_views(running: World) -> None:
    _publish(running)
    alarm_at = _send_drift(running)
    page = running.admin_page()
    refused: list[str] = []
    page.on("console", lambda m: refused.append(m.text) if "Content Security" in m.text else None)

    # The lineage of kws:1: itself and its four descendants, each box a link to its version.
    page.goto(f"{running.url}/ui/models/kws/1")
    graph = page.locator("svg.lineage")
    boxes = graph.locator("a.node")
    expect(boxes).to_have_count(5)
    hrefs = sorted(boxes.nth(i).get_attribute("href") or "" for i in range(5))
    wanted = ("kws/1", "kws/2", "kws-int8/1", "kws-fp16/1", "kws-tflite/1")
    assert hrefs == sorted(f"/ui/models/{r}" for r in wanted)
    labels = graph.locator("g.edge text")
    for made in ("static-int8", "fp16", "retrain job feedbeef", "convert to tflite-int8"):
        expect(labels.filter(has_text=made)).to_have_count(1)
    lineage = page.get_by_role("table", name="Lineage, each version with its parent")
    expect(lineage.locator("tbody tr")).to_have_count(5)
    expect(lineage.get_by_role("link", name="retrain job feedbeef")).to_have_attribute(
        "href", "/ui/jobs/feedbeef00000000"
    )

    # The Pareto plot of the known set: the front is kws:2 and kws-int8:1 (the chosen one).
    plot = page.locator("svg.pareto")
    expect(plot.locator("circle.front")).to_have_count(2)
    expect(plot.locator("circle.off-front")).to_have_count(2)
    expect(plot.locator("circle.chosen")).to_have_count(1)
    on_front = {
        (plot.locator("a").nth(i).get_attribute("aria-label") or "").split(",")[0]
        for i in range(4)
        if "on the Pareto front" in (plot.locator("a").nth(i).get_attribute("aria-label") or "")
    }
    assert on_front == {"kws:2", "kws-int8:1"}
    variants = page.get_by_role("table", name="Variants")
    expect(variants.get_by_role("row", name="kws-tflite:1")).to_contain_text(
        "left off the plot: latency and accuracy not measured"
    )
    expect(variants.get_by_role("row", name="kws-int8:1")).to_contain_text("objective latency")
    page.screenshot(path=str(_shots() / "model-lineage.png"), full_page=True)
    # The boxes are in the Tab order (one Tab from a box to the next); one is followed by Enter.
    boxes.first.focus()
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.getAttribute('href')") == (
        boxes.nth(1).get_attribute("href")
    )
    graph.locator('a[href="/ui/models/kws-int8/1"]').focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text("Model kws-int8:1")
    expect(page.locator('svg.lineage a[aria-current="page"]')).to_have_attribute(
        "href", "/ui/models/kws-int8/1"
    )

    # Drift over time: the columns hold exactly the figures node-1 sent, and the alarm.
    answer = page.request.get(f"{running.url}/ui/monitoring/kws/1/drift.json")
    assert answer.status == 200
    cols = answer.json()
    assert [x for x in cols["drift_ratio_max"] if x is not None] == [0.4, 0.5, 1.7]
    assert [x for x in cols["windowed_accuracy"] if x is not None] == [0.9, 0.85, 0.6]
    assert [x for x in cols["nodes_drifting"] if x is not None] == [0, 0, 1]
    assert [x for x in cols["alarms"] if x is not None] == [1]
    assert [(a["type"], round(a["at"], 3)) for a in cols["alarm_list"]] == [
        ("drift", round(alarm_at, 3))
    ]
    assert cols["reports"] == 3 and not cols["capped"]
    page.goto(f"{running.url}/ui/monitoring")
    chart = page.locator('div.chart[data-series="/ui/monitoring/kws/1/drift.json"]')
    expect(chart.locator("canvas").first).to_be_visible()
    page.screenshot(path=str(_shots() / "monitoring-drift.png"), full_page=True)
    page.get_by_role("link", name="kws:1").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Drift of kws:1")
    bins = page.get_by_role("table", name="Drift over time, per time bin")
    expect(bins.locator("tbody tr")).to_have_count(4)  # the three reports, the alarm
    expect(page.get_by_role("table", name="Alarms, oldest first")).to_contain_text("drift")
    assert page.request.get(f"{running.url}/ui/monitoring/kws/9/drift.json").status == 404
    assert refused == [], refused
    page.close()


def _shots() -> Any:
    from tests.browser.dashboard_world import SHOTS

    SHOTS.mkdir(parents=True, exist_ok=True)
    return SHOTS
