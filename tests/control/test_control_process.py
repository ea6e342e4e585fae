"""``edgeloop control`` as real OS processes: one serving a node end to end through python-tuf,
and two on one database behaving as one."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from tests.control.process import control_process, enroll, report, tuf_updater
from tests.tiny_models import make_linear_onnx
from tuf.api import exceptions as tuf_errors

from edgeloop.core.types import Manifest, TensorSpec
from edgeloop.sdk.control_client import ControlClient

ADMIN = "test-admin-token-0123456789abcdef"
# Deadlines for what the control loop does on its own (ticks, re-signing): generous, because a
# loaded 2-core CI machine stalls processes for seconds; a pass never waits for them.
WAIT_S = 60


def _manifest(name: str) -> Manifest:
    return Manifest(name, "onnx", (TensorSpec("input", (None, 4)),),
                    (TensorSpec("output", (None, 3)),))  # fmt: skip


def _document(answer: dict[str, Any], folder: Path) -> dict[str, Any]:
    """The node's deployment document, downloaded and verified by python-tuf."""
    with tuf_updater(answer, answer["node_token"], folder) as updater:
        updater.refresh()
        info = updater.get_targetinfo(f"deployments/{answer['node_id']}.json")
        assert info is not None
        return dict(json.loads(Path(updater.download_target(info)).read_bytes()))


def _wait_wave(client: ControlClient, rollout_id: str, wave: int) -> None:
    deadline = time.monotonic() + WAIT_S
    while (current := client.rollout(rollout_id))["wave"] < wave:
        assert time.monotonic() < deadline, (
            f"wave {wave} of {rollout_id} did not start within {WAIT_S} s: {current['events'][-3:]}"
        )
        time.sleep(0.05)


def test_control_process_serves_a_node_through_tuf(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with control_process(home, None, "--tick-s", "0.1") as ctl:
        assert ctl.ready["admin_token_file"] == str(home / "control" / "admin.token")
        # start-up objects (libraries, the app) are out of the collector's scans: tens of
        # thousands of them (docs/benchmarks.md "GC pauses")
        assert ctl.ready["frozen_objects"] > 10_000
        token = (home / "control" / "admin.token").read_text().strip()
        with ControlClient(ctl.url, token) as client:
            assert client.health()["status"] == "ok"
            client.publish_model(make_linear_onnx(tmp_path / "m.onnx"), _manifest("lin"))
            answer = enroll(ctl.url, client.enrollment_token()["token"], "edge-1")
            rollout = client.deploy({"name": "d", "model": "lin:1", "plan": {"soak_s": 0}})
            doc = _document(answer, tmp_path / "client")
            assert doc["node_id"] == answer["node_id"] and doc["revision"] == 1
            entry = doc["models"][0]
            with tuf_updater(answer, answer["node_token"], tmp_path / "client") as updater:
                updater.refresh()
                artifact = updater.get_targetinfo(entry["target"])
                assert artifact is not None and artifact.hashes["sha256"] == entry["sha256"]
                path = Path(updater.download_target(artifact))
            assert path.read_bytes() == (tmp_path / "m.onnx").read_bytes()
            report(ctl.url, answer, doc)
            done = client.wait_rollout(rollout["rollout_id"], {"COMPLETED"}, timeout_s=WAIT_S)
            assert [e["state"] for e in done["events"]][-1] == "COMPLETED"


def test_timestamp_is_resigned_before_it_expires(tmp_path: Path) -> None:
    # The loop re-signs a timestamp past half its life, checking every tenth of it (and every
    # tick): with 12 s, what it serves has about 4.7 s left at worst, so a few seconds' stall
    # of a loaded machine is absorbed. (With 4 s and the default 1 s tick the margin was zero:
    # expiries are whole seconds, so a timestamp could be served with nothing left.)
    lifetime = 12
    with control_process(tmp_path / "home", None, "--timestamp-expiry-s", str(lifetime),
                         "--tick-s", "0.1", admin_token=ADMIN) as ctl:  # fmt: skip
        with ControlClient(ctl.url, ADMIN) as client:
            answer = enroll(ctl.url, client.enrollment_token()["token"], "n")
            first = client.call("GET", "/tuf/metadata/timestamp.json")["signed"]
            # Wait until the first timestamp has expired: a client that got no newer one fails.
            expired = datetime.fromisoformat(first["expires"].replace("Z", "+00:00"))
            while (left := expired.timestamp() - time.time()) >= 0:
                time.sleep(min(left + 0.1, 1.0))
            with tuf_updater(answer, answer["node_token"], tmp_path / "c") as updater:
                updater.refresh()  # raises ExpiredMetadataError on a stale timestamp
            timestamp = client.call("GET", "/tuf/metadata/timestamp.json")["signed"]
        assert timestamp["version"] > first["version"]


def test_another_nodes_document_is_refused_through_tuf(tmp_path: Path) -> None:
    with control_process(tmp_path / "home", None, admin_token=ADMIN) as ctl:
        with ControlClient(ctl.url, ADMIN) as client:
            client.publish_model(make_linear_onnx(tmp_path / "m.onnx"), _manifest("lin"))
            a = enroll(ctl.url, client.enrollment_token()["token"], "a")
            b = enroll(ctl.url, client.enrollment_token()["token"], "b")
            client.deploy({"name": "d", "model": "lin:1"})
        with tuf_updater(a, b["node_token"], tmp_path / "b-as-a") as updater:
            updater.refresh()  # metadata is public
            info = updater.get_targetinfo(f"deployments/{a['node_id']}.json")
            assert info is not None
            with pytest.raises(tuf_errors.DownloadHTTPError) as caught:
                updater.download_target(info)
        assert caught.value.status_code == 403


def test_two_processes_on_one_database_behave_as_one(tmp_path: Path, db_url: str) -> None:
    home = tmp_path / "home"  # shared: one keys folder, as replicas share their keys
    with (
        control_process(home, db_url, "--tick-s", "0.05", admin_token=ADMIN) as one,
        control_process(home, db_url, "--tick-s", "0.05", admin_token=ADMIN) as two,
    ):
        clients = [ControlClient(one.url, ADMIN), ControlClient(two.url, ADMIN)]
        model = make_linear_onnx(tmp_path / "m.onnx")
        clients[0].publish_model(model, _manifest("lin"))
        clients[1].publish_model(make_linear_onnx(tmp_path / "m2.onnx", seed=3), _manifest("lin"))
        answers: list[list[dict[str, Any]]] = [[], []]
        for group in (0, 1):
            for i in range(2):
                token = clients[group].enrollment_token(labels={"group": str(group)})["token"]
                answers[group].append(enroll((one, two)[group].url, token, f"g{group}n{i}"))
        errors: list[BaseException] = []
        rounds = 3

        def churn(group: int) -> None:
            client = clients[group]
            try:
                for _ in range(rounds):
                    spec = {"name": f"g{group}", "model": "lin:1",
                            "selector": {"labels": {"group": str(group)}}}  # fmt: skip
                    rollout = client.deploy(spec)
                    client.rollback(rollout["rollout_id"], to="lin:2")
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=churn, args=(g,)) for g in (0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        nodes = {n["node_id"]: n for n in clients[1].nodes()}
        for group in (0, 1):
            for answer in answers[group]:
                # Each round signed a new document for the node: deploy, then rollback.
                assert nodes[answer["node_id"]]["desired_revision"] == 2 * rounds
                doc = _document(answer, tmp_path / "c" / answer["node_id"])
                assert doc["revision"] == 2 * rounds
                assert doc["models"][0]["variant"] == "lin:2"
        # Both processes serve the same signed repository.
        for name in ("timestamp.json", "1.root.json"):
            first = clients[0]._http.get(f"/tuf/metadata/{name}").content
            assert first == clients[1]._http.get(f"/tuf/metadata/{name}").content

        # Rollout ticks from both replicas' loops: every wave is entered exactly once.
        spec = {"name": "all", "model": "lin:1", "plan": {"waves": ["1", "50%", "100%"],
                "soak_s": 0}}  # fmt: skip
        rollout = clients[0].deploy(spec)
        everyone = {a["node_id"]: a for group in answers for a in group}
        acted: set[str] = set()
        for _ in range(3):
            current = clients[1].rollout(rollout["rollout_id"])
            wave = current["waves"][current["wave"]]
            for node_id in wave:
                if node_id not in acted:
                    doc = _document(everyone[node_id], tmp_path / "w" / node_id)
                    report((one, two)[len(acted) % 2].url, everyone[node_id], doc)
                    acted.add(node_id)
            if current["wave"] + 1 < len(current["waves"]):
                _wait_wave(clients[0], rollout["rollout_id"], current["wave"] + 1)
        done = clients[0].wait_rollout(rollout["rollout_id"], {"COMPLETED"}, timeout_s=WAIT_S)
        states = [e["state"] for e in done["events"]]
        assert states == ["PENDING", "WAVE", "SOAKING", "WAVE", "SOAKING", "WAVE", "SOAKING",
                          "COMPLETED"]  # fmt: skip
        for node in clients[0].nodes():
            assert node["desired_revision"] == 2 * rounds + 1  # one document for this rollout
        for client in clients:
            client.close()


def test_bad_database_url_is_a_config_error_not_a_traceback(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "edgeloop.cli.app", "control", "--port", "0", "--home",
           str(tmp_path / "h"), "--db", "mysql://x@localhost/db"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "mysql" in done.stderr and "Traceback" not in done.stderr


def test_a_timestamp_lifetime_too_short_for_the_tick_is_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    home = tmp_path / "h"
    cmd = [sys.executable, "-m", "edgeloop.cli.app", "control", "--port", "0", "--home",
           str(home), "--timestamp-expiry-s", "4"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "--timestamp-expiry-s 4" in done.stderr and "8 or more" in done.stderr
    assert "Traceback" not in done.stderr
    assert not home.exists()
