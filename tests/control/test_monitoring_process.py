"""A real ``edgeloop control`` process with ``--alert-webhook`` and ``--alert-rules``: a node's
drift telemetry reaches /api/v1/monitoring, ``edgeloop fleet monitor|alerts`` and the webhook."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
from tests.control.process import control_process
from tests.control.test_alerts import receiver
from tests.control.test_monitoring import item, metrics
from typer.testing import CliRunner

from edgeloop.cli.app import app


def test_drift_telemetry_reaches_api_cli_metrics_and_webhook(tmp_path: Path) -> None:
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"rules": [{"name": "drift-1", "kind": "drifting_nodes", "k": 1}]}))
    with receiver() as hook, control_process(
        tmp_path / "home", None, "--alert-webhook", hook.url, "--alert-rules", str(rules),
        "--tick-s", "0.2", "--alert-every-s", "0.2",
    ) as ctl:  # fmt: skip
        token = Path(ctl.ready["admin_token_file"]).read_text().strip()
        admin = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=ctl.url, timeout=30) as http:
            grant = http.post("/api/v1/enrollment-tokens", json={}, headers=admin).json()
            body = {"enrollment_token": grant["token"], "name": "cam-1", "capabilities": {}}
            node = http.post("/api/v1/enroll", json=body).json()
            auth = {"Authorization": f"Bearer {node['node_token']}"}
            batch = {"items": [item("metrics", metrics(True), time.time())]}
            url = f"/api/v1/nodes/{node['node_id']}/telemetry"
            assert http.post(url, json=batch, headers=auth).json()["accepted"] == 1
            deadline = time.monotonic() + 30
            while not hook.bodies and time.monotonic() < deadline:
                time.sleep(0.1)
            assert hook.bodies and hook.bodies[0]["alert"]["subject"] == "digits:2"
            gauges = http.get("/metrics", headers=admin).text
            assert 'edgeloop_fleet_alerts_firing{rule="drift-1"} 1.0' in gauges
        runner = CliRunner()
        where = ["--control", ctl.url, "--token", token, "--format", "json"]
        shown = runner.invoke(app, ["fleet", "monitor", "--model", "digits", *where])
        assert shown.exit_code == 0, shown.output
        [row] = json.loads(shown.stdout)["rows"]
        assert row["node_id"] == node["node_id"] and row["drifting"] is True
        alerts = runner.invoke(app, ["fleet", "alerts", "--state", "firing", *where])
        assert alerts.exit_code == 0, alerts.output
        assert json.loads(alerts.stdout)["alerts"][0]["rule"] == "drift-1"
        bad = runner.invoke(app, ["fleet", "alerts", "--state", "burning", *where])
        assert bad.exit_code != 0 and "'state'" in str(bad.exception)
        table = runner.invoke(app, ["fleet", "monitor", "--control", ctl.url, "--token", token])
        assert table.exit_code == 0 and "drifting" in table.stdout


def test_the_cli_modules_import_in_either_order() -> None:
    for first in ("edgeloop.cli.fleet_monitor", "edgeloop.cli.fleet"):
        done = subprocess.run([sys.executable, "-c", f"import {first}"], capture_output=True,
                              text=True, timeout=120, check=False)  # fmt: skip
        assert done.returncode == 0, done.stderr
