"""The dashboard's cost with a 10,000-node fleet in the database (docs/ui.md).

Seeds a control plane's SQLite database with N nodes (each with an agent-shaped report), one
fleet-monitoring row per node (every 20th drifting), one published model and a rollout over
100 of the nodes, 20 federated tasks of 50 rounds and 200 retraining jobs
(bench/ui_bench_seed_fl.py); starts a real ``edgeloop control`` process on it; signs in; then

* **server time** of each page: the ``Server-Timing: app;dur=`` the dashboard puts on every
  answer (the handler's wall time: session check, database reads, rendering), and the client's
  wall time around the whole HTTP request, over ``--runs`` sequential GETs after 5 warm-ups;
* **first paint in Chromium** (Debian's, through Playwright): First Contentful Paint and
  Largest Contentful Paint of each page (``performance`` entries), over ``--paints`` loads.

Prints one JSON object. The seeded figures in the reports are made up by this script to fill
the database; they are inputs, not readings, and the bench reports only times it measured.

    .venv/bin/python bench/ui_bench.py [--nodes 10000] [--runs 100] [--paints 15]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.control.process import control_process  # noqa: E402
from tests.tiny_models import make_linear_onnx  # noqa: E402
from ui_bench_seed_fl import ROUNDS, seed_federated, seed_jobs  # noqa: E402

from edgeloop.control import backlog_store, drift_history, monitoring, tables  # noqa: E402
from edgeloop.control.deployments import DeploymentSpec  # noqa: E402
from edgeloop.control.plane import ControlPlane  # noqa: E402
from edgeloop.control.ui import sessions  # noqa: E402
from edgeloop.core.types import Manifest, TensorSpec  # noqa: E402

ADMIN = "bench-admin-" + "b" * 24
# Rollout ticks every 5 s, alert rules evaluated once an hour: the figures are the pages' own
# (an evaluation over 10,000 nodes takes a few hundred ms: docs/fleet-monitoring.md).
QUIET = ("--tick-s", "5", "--alert-every-s", "3600")
NO_BACKLOG = {"backlog_rows": None, "backlog_bytes": None, "backlog_oldest_s": None,
              "backlog_at": None}  # fmt: skip
CLASSES = ("x86_64-cpu", "aarch64-cpu", "aarch64-gpu", "x86_64-cuda")


def _report(i: int, now: float) -> dict[str, Any]:
    return {
        "revision": 1,
        "updater": {
            "state": "IDLE",
            "target_revision": None,
            "error": None,
            "outcome": "COMMITTED",
            "failed_revision": None,
        },
        "active": {
            "name": "lin",
            "version": 1,
            "variant": "lin:1",
            "sha256": "0" * 64,
            "since": "2026-12-07T00:00:00+00:00",
            "slot": "a",
            "revision": 1,
        },
        "previous": None,
        "self_test": None,
        "health": {
            "window_s": 30.0,
            "requests": 100 + i % 7,
            "errors": 1 if i % 33 == 0 else 0,
            "error_rate": 0.01 if i % 33 == 0 else 0.0,
            "p99_ms": 2.5,
        },
        "events": [
            {"at": "2026-12-07T00:00:00+00:00", "state": s, "detail": "seeded"}
            for s in ("DOWNLOAD", "VERIFY", "ACTIVATE", "COMMIT")
        ],
        # Every 9th node has telemetry waiting to ship (the fleet's "backlog > 0" filter).
        "outbox": {
            "rows": 12 if i % 9 == 0 else 0,
            "bytes": 4096 if i % 9 == 0 else 0,
            "oldest_age_s": 30.0 if i % 9 == 0 else None,
            "kinds": {},
        },
    }


def seed(home: Path, nodes: int) -> dict[str, Any]:
    """The database of a fleet of ``nodes``; returns what the pages' URLs need."""
    plane, _ = ControlPlane.open(home, admin_token=ADMIN)
    sessions.create_table(plane.db)
    now = time.time()
    node_rows, mon_rows = [], []
    for i in range(nodes):
        node_id = f"node-{i:012x}"
        seen = None if i % 50 == 0 else now - (600 if i % 10 == 0 else i % 30)
        node_rows.append(
            {
                "node_id": node_id,
                "name": f"site{i % 40:02d}-node-{i:05d}",
                "token_hash": f"{i:064x}",
                "labels": json.dumps(
                    {"site": f"s{i % 40}", "group": "canary" if i < 100 else "main"}
                ),
                "tier": None,
                "parent": None,
                "capabilities": json.dumps({"arch": "x86_64"}),
                "device_class": CLASSES[i % 4],
                "agent_url": None,
                "enrolled_at": now - 3600,
                "last_seen": seen,
                "reported": None if seen is None else json.dumps(_report(i, now)),
                "desired_revision": 1 if seen else 0,
                "desired": None,
            }
        )
        # The backlog columns the control plane writes with each report (fleet.store_report).
        text = node_rows[-1]["reported"]
        node_rows[-1].update(backlog_store.totals(text, now) if text else NO_BACKLOG)
        figures = {
            "drifting": i % 20 == 0,
            "drift_ratio": {"input": 1.4 if i % 20 == 0 else 0.3},
            "samples_seen": 5000,
            "state": "active",
            "requests": 100,
            "errors": 0,
            "estimated_accuracy": 0.9,
        }
        mon_rows.append(
            {
                "node_id": node_id,
                "model": "lin",
                "model_version": "1",
                "metrics_at": now - 5,
                "snapshot": json.dumps(figures, separators=(",", ":")),
                "event_at": None,
                "event": None,
                "drift_event_at": None,
                "received_at": now - 5,
            }
        )
    with plane.db.write() as conn:
        conn.execute(tables.nodes.insert(), node_rows)
        conn.execute(tables.monitoring.insert(), mon_rows)
    model = make_linear_onnx(home / "lin.onnx")
    manifest = Manifest(
        "lin",
        "onnx",
        (TensorSpec("input", (None, 4), "float32"),),
        (TensorSpec("output", (None, 3), "float32"),),
    )
    ref = plane.registry.publish(model, manifest).ref
    _lineage_and_drift(plane, home, ref, [r["node_id"] for r in node_rows], now)
    rollouts = {}
    for name, selector, waves in (
        ("canary", {"labels": {"group": "canary"}}, ["10%", "100%"]),
        ("everywhere", {}, ["1%", "100%"]),
    ):
        spec = DeploymentSpec.from_dict(
            {
                "name": name,
                "model": str(ref),
                "selector": selector,
                "plan": {"waves": waves, "wave_timeout_s": 3600},
            }
        )
        rollouts[name] = plane.deploy(spec)["rollout_id"]
        if name == "canary":  # the nodes of the first are busy until it ends: end it
            plane.rollback(rollouts[name], None)
    _timeline_and_datasets(plane, home, rollouts["everywhere"])
    with plane.db.engine.connect() as conn:
        middle = conn.execute(
            sa.select(tables.nodes.c.name, tables.nodes.c.node_id)
            .order_by(tables.nodes.c.name, tables.nodes.c.node_id)
            .offset(nodes // 2)
            .limit(1)
        ).one()
    federated = seed_federated(plane.db, [r["node_id"] for r in node_rows], now)
    jobs = seed_jobs(plane.settings)  # last: its running jobs' heartbeats are the newest
    plane.close()
    return {
        **federated,
        **jobs,
        "rollout": rollouts["canary"],
        "everywhere": rollouts["everywhere"],
        "ref": ref,
        "middle": tuple(middle),
        "node": node_rows[nodes // 3]["node_id"],
    }


def _lineage_and_drift(
    plane: ControlPlane, home: Path, ref: Any, node_ids: list[str], now: float
) -> None:
    """The model page's lineage and variants (lin:1 -> lin-int8:1 -> lin-int8-tflite:1, each
    with a made-up measurement) and 6,000 metrics items of lin:1 over the last 24 hours, put in
    the drift history by the ingest's own function (``drift_history.record``): every minute of
    the window holds a history row, the most the chart reads."""
    from edgeloop.control.ui.drift import MAX_ITEMS
    from edgeloop.core.types import Latency, Measurement

    def measured(latency: float, accuracy: float) -> Measurement:
        return Measurement("lin", "onnxruntime", "cpu", 1, 100, Latency(latency, latency,
                           latency), 1000 / latency, None, 1, accuracy, "seeded", None,
                           "no meter", "bench", 1)  # fmt: skip

    parent = ref
    for name, recipe, ms in (("lin-int8", {"recipe": "static-int8"}, 1.0),
                             ("lin-int8-tflite", {"target": "tflite-int8"}, 0.8)):  # fmt: skip
        child = dataclasses.replace(
            manifest_of(name), recipe=recipe, parent=parent, measurements=(measured(ms, 0.9),)
        )
        parent = plane.registry.publish(make_linear_onnx(home / f"{name}.onnx"), child).ref
    items = MAX_ITEMS + 5000
    rows = []
    for k in range(items):
        node_id = node_ids[k % len(node_ids)]
        payload = {"model": "lin", "model_version": "1", "requests": 100, "errors": 0,
                   "monitoring": {"lin": {"version": "1", "drifting": k % 20 == 0,
                                          "drift_ratio": {"input": 0.3 + (k % 20 == 0)},
                                          "performance": {"accuracy": 0.9}}}}  # fmt: skip
        rows.append({"node_id": node_id, "item_id": str(uuid.UUID(int=k + 1)), "kind": "metrics",
                     "created_at": now - 86000 + 86000 * k / items, "received_at": now,
                     "content_type": "application/json", "payload": json.dumps(payload),
                     "model": "lin", "model_version": "1"})  # fmt: skip
    by_node: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_node.setdefault(row["node_id"], []).append(row)
    with plane.db.write() as conn:
        conn.execute(tables.telemetry.insert(), rows)
        for node_id, mine in by_node.items():
            drift_history.record(conn, node_id, monitoring.fold(node_id, mine), now)


def manifest_of(name: str) -> Manifest:
    return Manifest(
        name,
        "onnx",
        (TensorSpec("input", (None, 4), "float32"),),
        (TensorSpec("output", (None, 3), "float32"),),
    )


def _timeline_and_datasets(plane: ControlPlane, home: Path, rollout_id: str) -> None:
    """The rollout page's timeline (eight updater events for each node of the rollout's first
    wave, after it started, as agents ship them) and the data set pages' store (20 data sets of
    3 versions each, 2,000 tabular samples a version, half unlabelled; 100 nodes named)."""
    import numpy as np

    from edgeloop.data.dataset import Modality
    from edgeloop.data.samples import UNLABELLED, SampleSet
    from edgeloop.registry.dataset_library import DatasetLibrary
    from edgeloop.registry.datasets import Provenance

    r = tables.rollouts.c
    with plane.db.engine.connect() as conn:
        row = conn.execute(sa.select(r.created_at, r.waves).where(r.rollout_id == rollout_id)).one()
    steps = ("DOWNLOAD", "VERIFY", "STAGE", "SELF_TEST", "ACTIVATE", "WATCH", "COMMIT", "IDLE")
    items = [
        {"node_id": node_id, "item_id": str(uuid.uuid4()), "kind": "event",
         "created_at": row.created_at + 0.5 * k, "received_at": row.created_at + 0.5 * k,
         "content_type": "application/json", "model": None, "model_version": None,
         "payload": json.dumps({"at": "seeded", "state": s, "detail": "seeded", "revision": 1})}
        for node_id in json.loads(row.waves)[0]
        for k, s in enumerate(steps)
    ]  # fmt: skip
    with plane.db.write() as conn:
        conn.execute(tables.telemetry.insert(), items)
    rng = np.random.default_rng(0)
    node_ids = tuple(f"node-{i:012x}" for i in range(100))
    span = (datetime(2026, 12, 7, 1, tzinfo=UTC), datetime(2026, 12, 7, 2, tzinfo=UTC))
    with DatasetLibrary.open(plane.settings) as library:
        for d in range(20):
            for v in range(3):
                n = 2000
                y = rng.integers(0, 3, n)
                y[rng.random(n) < 0.5] = UNLABELLED
                samples = SampleSet(rng.random((n, 4), np.float32), y.astype(np.int64),
                                    tuple(f"req-{d}-{v}-{i}" for i in range(n)), ("a", "b", "c"),
                                    Modality.TABULAR)  # fmt: skip
                prov = Provenance(node_ids, "lin:1", ("uncertain", "random"), span)
                library.add(f"caps-{d:02d}", samples, prov)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))], 2)


def sign_in(client: httpx.Client) -> None:
    page = client.get("/ui/sign-in")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf is not None
    answer = client.post("/ui/sign-in", data={"token": ADMIN, "csrf": csrf.group(1)})
    assert answer.status_code == 303, answer.text


def check(url: str, paths: dict[str, str], expect: dict[str, str], facts: dict[str, Any]) -> None:
    """Fail loudly unless each page in ``expect`` answers 200 with its content (and the task
    and job pages name their task or job)."""
    with httpx.Client(base_url=url, timeout=60) as client:
        sign_in(client)
        for label, needed in expect.items():
            if label not in paths:
                continue
            answer = client.get(paths[label])
            body = answer.text
            named = facts["job"] if label.startswith("job") else facts["task"]
            if label.endswith("(JSON)"):  # the chart's columns name no task
                named = '"accuracy":['

            if answer.status_code != 200 or needed not in body or named not in body:
                raise RuntimeError(
                    f"{label} ({paths[label]}): HTTP {answer.status_code}, expected "
                    f"{needed!r} and {named!r} in the body: {body[:400]!r}"
                )
            if label.endswith("(JSON)") and len(json.loads(body)["t"]) != ROUNDS:
                raise RuntimeError(f"{label}: {len(json.loads(body)['t'])} rounds, not {ROUNDS}")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (all its threads; Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_times(url: str, paths: dict[str, str], runs: int, pid: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with httpx.Client(base_url=url, timeout=60) as client:
        sign_in(client)
        for label, path in paths.items():
            server, wall, size, cpu = [], [], 0, 0.0
            for i in range(5 + runs):
                if i == 5:
                    cpu = cpu_s(pid)
                started = time.perf_counter()
                answer = client.get(path)
                took = (time.perf_counter() - started) * 1000
                assert answer.status_code == 200, (path, answer.status_code, answer.text[:300])
                if i >= 5:
                    found = re.search(r"dur=([0-9.]+)", answer.headers["server-timing"])
                    assert found is not None
                    server.append(float(found.group(1)))
                    wall.append(took)
                    size = len(answer.content)
            cpu_ms = (cpu_s(pid) - cpu) * 1000 / runs
            out[label] = {
                "path": path,
                "bytes": size,
                "runs": runs,
                "server_ms": {
                    "p50": _pct(server, 0.5),
                    "p95": _pct(server, 0.95),
                    "max": round(max(server), 2),
                },
                "client_ms": {"p50": _pct(wall, 0.5), "p95": _pct(wall, 0.95)},
                "control_cpu_ms_per_request": round(cpu_ms, 2),
            }
    return out


_PAINT = """() => new Promise(done => {
  // Both entries are buffered; a page may paint after its load event, so wait for them.
  const seen = {fcp: null, lcp: null};
  const check = () => { if (seen.fcp !== null && seen.lcp !== null) done(seen); };
  new PerformanceObserver(list => {
    for (const e of list.getEntries()) {
      if (e.name === 'first-contentful-paint') seen.fcp = e.startTime;
    }
    check();
  }).observe({type: 'paint', buffered: true});
  new PerformanceObserver(list => {
    const all = list.getEntries(); seen.lcp = all[all.length - 1].startTime; check();
  }).observe({type: 'largest-contentful-paint', buffered: true});
  setTimeout(() => done(seen), 5000);
})"""


def paints(url: str, paths: dict[str, str], loads: int) -> dict[str, Any] | str:
    executable = shutil.which("chromium")
    if executable is None:
        return "n/a: Debian's chromium is not installed (apt-get install -y chromium)"
    from playwright.sync_api import sync_playwright

    out: dict[str, Any] = {"chromium": None}
    with sync_playwright() as pw:
        args = ["--no-sandbox"] if os.geteuid() == 0 else []
        browser = pw.chromium.launch(executable_path=executable, args=args)
        out["chromium"] = browser.version
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        page = context.new_page()
        page.goto(f"{url}/ui/sign-in")
        page.get_by_label("Access token").fill(ADMIN)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(re.compile(r".*/ui/fleet$"))
        for label, path in paths.items():
            fcp, lcp = [], []
            for _ in range(loads):
                page.goto(url + path, wait_until="load")
                found = page.evaluate(_PAINT)
                if found["fcp"] is None or found["lcp"] is None:
                    raise RuntimeError(f"{path}: Chromium reported no paint entry: {found}")
                fcp.append(found["fcp"])
                lcp.append(found["lcp"])
            out[label] = {
                "loads": loads,
                "fcp_ms": {"p50": _pct(fcp, 0.5), "p95": _pct(fcp, 0.95)},
                "lcp_ms": {"p50": _pct(lcp, 0.5), "p95": _pct(lcp, 0.95)},
            }
        browser.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--paints", type=int, default=15)
    parser.add_argument(
        "--only",
        default="",
        help="time only the pages whose label holds one of these words "
        "(comma-separated, e.g. 'drift,backlog'); empty: every page",
    )
    args = parser.parse_args()
    words = [w.strip() for w in args.only.split(",") if w.strip()]
    with tempfile.TemporaryDirectory(prefix="ui-bench-") as tmp:
        home = Path(tmp) / "home"
        started = time.perf_counter()
        facts = seed(home, args.nodes)
        seeded_s = time.perf_counter() - started
        name, node_id = facts["middle"]
        paths = {
            "fleet (first 50)": "/ui/fleet",
            "fleet (page in the middle, keyset)": f"/ui/fleet?after_name={name}&after_id={node_id}",
            "fleet (200 per page)": "/ui/fleet?limit=200",
            "fleet (search 'node-0999')": "/ui/fleet?q=node-0999",
            "fleet (seen=silent, x86_64-cuda)": "/ui/fleet?seen=silent&device_class=x86_64-cuda",
            "fleet (htmx results part)": "/ui/fleet?q=site07",
            "node": f"/ui/nodes/{facts['node']}",
            "rollouts": "/ui/rollouts",
            "rollout (100 nodes, rolled back)": f"/ui/rollouts/{facts['rollout']}",
            "rollout (whole fleet, wave 1 of 2)": f"/ui/rollouts/{facts['everywhere']}",
            "models": "/ui/models",
            "model version": f"/ui/models/lin/{facts['ref'].version}",
            "monitoring": "/ui/monitoring",
            "monitoring drift chart (JSON, capped read)": "/ui/monitoring/lin/1/drift.json",
            "monitoring drift of lin:1 (tables)": "/ui/monitoring/lin/1",
            "experiments": "/ui/experiments",
            "fleet (outbox backlog > 0)": "/ui/fleet?backlog=waiting",
            "data sets (60 versions)": "/ui/datasets",
            "data set version (2,000 samples)": "/ui/datasets/caps-07/2",
            "label queue": "/ui/labels",
            "label tasks download (CSV, 1,000 tasks)": "/ui/datasets/caps-07/2/tasks?format=csv",
            "federated tasks (20)": "/ui/federated",
            "federated task (50 rounds)": f"/ui/federated/{facts['task']}",
            "federated rounds chart (JSON)": f"/ui/federated/{facts['task']}/rounds.json",
            "jobs (200)": "/ui/jobs",
            "job (log tail)": f"/ui/jobs/{facts['job']}",
        }
        # What each of these pages must hold (an error page answered 200 would not).
        expect = {
            "federated tasks (20)": facts["task"],
            "federated task (50 rounds)": "Each round",
            "federated rounds chart (JSON)": '"t":[1,2,',
            "jobs (200)": f"/ui/jobs/{facts['job']}",
            "job (log tail)": "the last 200 of 400 lines",
        }
        if words:
            paths = {k: v for k, v in paths.items() if any(w in k for w in words)}
        with control_process(home, None, *QUIET, admin_token=ADMIN) as cp:
            check(cp.url, paths, expect, facts)
            servers = server_times(cp.url, paths, args.runs, cp.proc.pid)
            shown = {
                k: paths[k]
                for k in (
                    "fleet (first 50)",
                    "node",
                    "rollout (whole fleet, wave 1 of 2)",
                    "models",
                    "monitoring",
                    "federated task (50 rounds)",
                    "jobs (200)",
                )
                if k in paths
            }
            painted = paints(cp.url, shown, args.paints) if shown else "n/a: no page painted"
    print(
        json.dumps(
            {
                "nodes": args.nodes,
                "seed_s": round(seeded_s, 1),
                "cpus": os.cpu_count(),
                "load_average_1m": round(os.getloadavg()[0], 2),
                "server": servers,
                "paint": painted,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
