"""The partition scenario of issue 7 (tests/agent/test_partition.py and bench/partition.py).

``edgeloop control`` and ``edgeloop agent`` run as OS processes on loopback ports. The agent serves
a deployed model; the control plane is frozen with SIGSTOP (its port stays bound, so connections
hang until the agent's timeouts, as behind a dead link) while a client keeps sending inference
requests; optionally the agent is killed with SIGKILL mid-partition and started again on the same
home; then SIGCONT, and the telemetry store is read back with the admin query.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.agent.agent_process import AgentProcess
from tests.tiny_models import make_linear_onnx

from edgeloop.core.types import Manifest, TensorSpec
from edgeloop.sdk.control_client import ControlClient

MANIFEST = Manifest("lin", "onnx", (TensorSpec("input", (None, 4)),),
                    (TensorSpec("output", (None, 3)),))  # fmt: skip
ROW = [0.1, 0.2, 0.3, 0.4]
KINDS = ("sample", "metrics", "event")


@contextlib.contextmanager
def port_held(port: int) -> Iterator[None]:
    """Keep ``port`` (free: its listener is gone) from other processes until the control plane
    listens there again: a socket bound with SO_REUSEADDR that never listens. A connection to the
    port is still refused, as by a dead control plane; an outgoing connection's ephemeral port or
    a bind without SO_REUSEADDR cannot take it; the restarted control plane binds it (with
    SO_REUSEADDR) next to this socket."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        yield


@contextlib.contextmanager
def control(home: Path, port: int = 0) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``edgeloop control`` with its log in a file (a full stderr pipe would stall it)."""
    cmd = [sys.executable, "-m", "edgeloop.cli.app", "control", "--port", str(port), "--home",
           str(home), "--format", "json", "--tick-s", "0.1"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("EDGELOOP_DB", "EDGELOOP_HOME")}
    home.mkdir(parents=True, exist_ok=True)
    with (home / "control.log").open("ab") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"control exited: {(home / 'control.log').read_text()[-2000:]}")
        yield str(json.loads(line)["url"]), proc
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


@dataclass
class Plane:
    """A control plane several runs share (tests/agent/test_partition.py): each run enrolls its
    own node with its own label and deploys to that label alone; ``proc`` is replaced when a run
    kills and restarts it (``stack`` keeps every process it started, to stop at the end)."""

    home: Path
    url: str
    proc: subprocess.Popen[bytes]
    stack: contextlib.ExitStack
    runs: int = 0


@contextlib.contextmanager
def plane(home: Path) -> Iterator[Plane]:
    """``edgeloop control`` on ``home`` with ``lin:1`` published, for :func:`run`."""
    with contextlib.ExitStack() as stack:
        url, proc = stack.enter_context(control(home))
        token = (home / "control" / "admin.token").read_text().strip()
        with ControlClient(url, token) as client:
            client.publish_model(make_linear_onnx(home / "v1.onnx", seed=1), MANIFEST)
        yield Plane(home, url, proc, stack)


def serve_for(agent: AgentProcess, seconds: float, rps: float) -> Counter[int]:
    """Send ``seconds * rps`` inference requests, at most ``rps`` a second; answers counted by
    status. The count is fixed, not what fits in ``seconds``: on a loaded machine the requests
    take longer (the partition lasts longer), but the figures checked stay the same."""
    answers: Counter[int] = Counter()
    start = time.monotonic()
    for sent in range(round(seconds * rps)):
        ahead = start + sent / rps - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
        answers[agent.infer("lin", ROW).status_code] += 1
    return answers


def stored(client: ControlClient, node: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = client.call(
        "GET", "/api/v1/telemetry", params={"node": node, "limit": "100000"}
    )["items"]
    return items


def wait_empty(agent: AgentProcess, timeout_s: float) -> dict[str, Any]:
    """The agent's telemetry status at a moment its outbox and sample buffer are empty."""

    def empty(status: dict[str, Any]) -> dict[str, Any] | None:
        tel: dict[str, Any] = status["telemetry"]
        return tel if tel["outbox"]["total_items"] == 0 and tel["buffered_samples"] == 0 else None

    found: dict[str, Any] = agent.wait_for(empty, timeout_s, "an empty outbox")
    return found


def cut_off(status: dict[str, Any]) -> bool:
    return bool(status["telemetry"]["shipper"]["consecutive_failures"] >= 1)


def outbox_file(home: Path) -> tuple[set[str], dict[str, int]]:
    """Ids in a (dead) agent's outbox file and its drop totals, read with sqlite3."""
    conn = sqlite3.connect(home / "agent" / "outbox.sqlite")
    try:
        ids = {row[0] for row in conn.execute("SELECT id FROM items")}
        drops = dict(conn.execute("SELECT kind, total FROM drops").fetchall())
    finally:
        conn.close()
    return ids, drops


def _at(item: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(item["created_at"]).replace("Z", "+00:00")).timestamp()


def run(
    tmp: Path,
    *,
    partition_s: float,
    rps: float,
    outbox_mb: float = 64.0,
    sample_rate: float = 1.0,
    metrics_every_s: float = 1.0,
    kill: bool = False,
    cut: str = "stop",
    reconnect_timeout_s: float = 120.0,
    shared: Plane | None = None,
) -> dict[str, Any]:
    """One partition; the facts to check, as measured (see the module doc). ``shared``: the
    control plane to cut off (left running, or restarted, afterwards); else one of its own."""
    env = {"EDGELOOP_SAMPLE_RATE": str(sample_rate), "EDGELOOP_OUTBOX_MB": str(outbox_mb),
           "EDGELOOP_METRICS_EVERY_S": str(metrics_every_s)}  # fmt: skip
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # AgentProcess passes its environment on
    node_home = tmp / "node"
    facts: dict[str, Any] = {"partition_s": partition_s, "rps": rps, "outbox_mb": outbox_mb,
                             "sample_rate": sample_rate, "kill": kill, "cut": cut}  # fmt: skip
    try:
        with contextlib.ExitStack() as stack:
            ctl = shared or stack.enter_context(plane(tmp / "ctl"))
            ctl.runs += 1
            url = ctl.url
            token = (ctl.home / "control" / "admin.token").read_text().strip()
            with ControlClient(url, token) as client:
                labels = {"run": str(ctl.runs)}  # this run's node alone
                enroll = client.enrollment_token(labels)["token"]
                agent = AgentProcess(node_home, url, poll_s=0.2, enroll_token=enroll)
                try:
                    agent.wait_enrolled()
                    node = agent.status()["node_id"]
                    spec = {"name": f"d{ctl.runs}", "model": "lin:1",
                            "selector": {"labels": labels},
                            "plan": {"soak_s": 0, "watch_s": 0.5}}  # fmt: skip
                    rollout = client.deploy(spec)
                    assert client.wait_rollout(rollout["rollout_id"], {"COMPLETED"})
                    facts["before"] = dict(serve_for(agent, 2.0, rps))
                    wait_empty(agent, 60)

                    port = int(url.rsplit(":", 1)[1])
                    hold = stack.enter_context(contextlib.ExitStack())
                    if cut == "stop":  # the partition: frozen, its port still bound
                        ctl.proc.send_signal(signal.SIGSTOP)
                    else:  # the partition: gone (what it had not answered is lost with it)
                        ctl.proc.kill()
                        ctl.proc.wait()
                        hold.enter_context(port_held(port))  # the restart needs this port
                    started = time.monotonic()
                    half = partition_s / 2 if kill else partition_s
                    answers = serve_for(agent, half, rps)
                    if kill:
                        last = agent.status()["telemetry"]
                        killed_at = time.time()
                        agent.kill9()
                        file_ids, drops = outbox_file(node_home)
                        facts["run1"] = {"answers": dict(answers),
                                         "puts_at_last_status": last["puts"],
                                         "outbox_ids_at_kill": len(file_ids),
                                         "drops": drops}  # fmt: skip
                        agent = AgentProcess(node_home, url, poll_s=0.2)
                        answers = serve_for(agent, partition_s - half, rps)
                    facts["partition_answers"] = dict(answers)
                    if not kill:  # the shipper noticed the partition (a frozen control plane
                        # costs it the request's 10 s timeout first, a late start on a slow box)
                        agent.wait_for(cut_off, 60, "a failed shipment")
                    during = agent.status()["telemetry"]
                    facts["during"] = {"outbox": during["outbox"], "shipper": during["shipper"]}
                    facts["partition_measured_s"] = round(time.monotonic() - started, 1)
                    if cut == "stop":  # reconnection
                        ctl.proc.send_signal(signal.SIGCONT)
                    else:
                        ctl.proc = ctl.stack.enter_context(control(ctl.home, port))[1]
                        hold.close()
                    back = time.monotonic()
                    tel = wait_empty(agent, reconnect_timeout_s)
                    facts["drain_s"] = round(time.monotonic() - back, 1)
                    items = stored(client, node)
                    after = agent.status()["telemetry"]
                finally:
                    agent.stop()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    ids = [i["id"] for i in items]
    kinds = Counter(i["kind"] for i in items)
    reported: Counter[str] = Counter()
    for i in items:
        if i["kind"] == "dropped":
            reported.update(i["payload"]["counts"])
    facts.update(
        stored=dict(kinds),
        stored_unique_ids=len(set(ids)),
        stored_items=len(ids),
        reported_dropped=dict(reported),
        outbox_dropped=tel["outbox"]["dropped"],
        puts=tel["puts"],
        puts_after_query=after["puts"],
        shipper=tel["shipper"],
    )
    if kill:
        facts["run1"]["stored_ids_present"] = len(file_ids & set(ids))
        facts["run1"]["stored_before_kill"] = dict(
            Counter(i["kind"] for i in items if _at(i) <= killed_at)
        )
        facts["run2_stored"] = dict(Counter(i["kind"] for i in items if _at(i) > killed_at))
    return facts


def check(facts: dict[str, Any]) -> None:
    """The figure's claims, asserted (the test and the bench both call this)."""
    assert facts["stored_unique_ids"] == facts["stored_items"]  # exactly once
    assert set(facts["partition_answers"]) == {200}  # the node kept serving
    reported, dropped = facts["reported_dropped"], facts["outbox_dropped"]
    assert {k: v for k, v in reported.items() if v} == {k: v for k, v in dropped.items() if v}
    stored, low, high = facts["stored"], facts["puts"], facts["puts_after_query"]
    last = facts.get("run2_stored", stored)  # with a kill, this process's own items
    for kind in KINDS:
        kept_low = low.get(kind, 0) - dropped.get(kind, 0)
        kept_high = high.get(kind, 0) - dropped.get(kind, 0)
        assert kept_low <= last.get(kind, 0) <= kept_high, (kind, facts)
    if "run1" in facts:
        run1 = facts["run1"]
        assert run1["stored_ids_present"] == run1["outbox_ids_at_kill"]  # nothing acked lost
        at_status = run1["puts_at_last_status"].get("sample", 0)
        assert run1["stored_before_kill"].get("sample", 0) >= at_status
