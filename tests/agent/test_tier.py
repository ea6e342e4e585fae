"""The tier test of issue 7: 1 parent + 3 children, every one a real OS process on its own port.

The site (parent and children) reaches the control plane through a counting proxy (the uplink).
Facts asserted: one uplink download of an artifact serves all three children; each child still
verifies with TUF (a parent whose cached bytes were tampered with is rejected, the child falls
back to the control plane and commits); the parent's model answers the children's unsure rows
(counted); after ``kill -9`` of the parent the children keep serving, the cascade falls back
(counted) and a new artifact comes from the control plane; a hung parent (SIGSTOP) costs a
cascaded request the cascade's timeout (2 s) before the child's answer stands.
``EDGELOOP_TIER_FACTS=FILE`` writes the measured figures as JSON (docs/reliability.md,
"Hierarchical tiers").
"""

from __future__ import annotations

import json
import os
import signal
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
from tests.agent.tier_run import CountingProxy, TierAgent
from tests.control.process import control_process
from tests.tiny_models import make_linear_onnx

from edgeloop.core.types import Manifest, TensorSpec
from edgeloop.runtime.cascade import confidence
from edgeloop.sdk.control_client import ControlClient

PLAN = {"soak_s": 0, "watch_s": 0.2}  # each agent watches its new model 0.2 s
THRESHOLD = 0.9
DONE = {"COMPLETED", "HALTED", "ROLLED_BACK"}
UNSURE = [0.1, 0.2, 0.3, 0.4]  # the small model's confidence in this row is checked below


def _manifest(name: str) -> Manifest:
    return Manifest(name, "onnx", (TensorSpec("input", (None, 4)),),
                    (TensorSpec("output", (None, 3)),))  # fmt: skip


def _run(path: Path, rows: list[list[float]]) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out: np.ndarray = session.run(None, {"input": np.asarray(rows, np.float32)})[0]
    return out


def _sure_row(path: Path) -> list[float]:
    """A row the small model is sure of: the first +-50 unit vector with confidence > 0.99."""
    rows = [[s * 50.0 * (i == k) for i in range(4)] for k in range(4) for s in (1, -1)]
    conf = confidence(_run(path, rows))
    return rows[int(np.flatnonzero(conf > 0.99)[0])]


def _deploy(
    client: ControlClient, name: str, ref: str, labels: dict[str, str], between: Any = None
) -> None:
    """Roll ``ref`` out to the nodes with ``labels``; ``between()`` runs once it has started."""
    spec = {"name": name, "model": ref, "plan": PLAN, "selector": {"labels": labels}}
    rollout = client.deploy(spec)
    if between is not None:
        between()
    ended = client.wait_rollout(rollout["rollout_id"], {"COMPLETED", "HALTED", "ROLLED_BACK"}, 180)
    assert ended["state"] == "COMPLETED", ended["events"][-5:]


def _outputs(answer: dict[str, Any]) -> np.ndarray:
    out = answer["outputs"][0]
    return np.asarray(out["data"], np.float32).reshape(out["shape"])


def test_one_parent_three_children(tmp_path: Path) -> None:
    small = make_linear_onnx(tmp_path / "lin.onnx", seed=1)
    large = make_linear_onnx(tmp_path / "big.onnx", seed=7)  # stands for the parent's bigger model
    sure = _sure_row(small)
    conf = confidence(_run(small, [UNSURE, sure]))
    assert conf[0] < THRESHOLD < conf[1], conf  # one row goes up, one stays
    facts: dict[str, Any] = {"threshold": THRESHOLD, "phases_s": {}}
    started = last = time.monotonic()

    def phase(name: str) -> None:  # wall seconds of each part, in the facts (where time goes)
        nonlocal last
        facts["phases_s"][name] = round(time.monotonic() - last, 2)
        last = time.monotonic()

    with ExitStack() as stack:
        ctl = stack.enter_context(control_process(tmp_path / "ctl", None, "--tick-s", "0.1"))
        uplink = stack.enter_context(CountingProxy(ctl.url))
        token = (tmp_path / "ctl" / "control" / "admin.token").read_text().strip()
        client = stack.enter_context(ControlClient(ctl.url, token))
        lin = client.publish_model(small, _manifest("lin"))
        big = client.publish_model(large, _manifest("big"))

        def enroll(labels: dict[str, str]) -> str:
            return str(client.enrollment_token(labels=labels)["token"])

        parent = TierAgent(tmp_path / "parent", uplink.url, "--serve-children",
                           enroll_token=enroll({"role": "parent"}))  # fmt: skip
        stack.callback(parent.stop)
        parent.wait_ready()
        children = []
        for i in range(3):
            child = TierAgent(tmp_path / f"child-{i}", uplink.url, "--parent", parent.url,
                              "--parent-cascade", f"big@{THRESHOLD}",
                              enroll_token=enroll({"role": "child", "idx": str(i)}))  # fmt: skip
            stack.callback(child.stop)
            children.append(child)
        # runs first on the way out: all four stop at once, then each stop() waits for its own
        stack.callback(_terminate, [parent, *children])
        for child in children:
            child.wait_ready()
        for agent in (parent, *children):
            agent.wait_enrolled()

        phase("started")
        # -- one uplink download serves the site ------------------------------------------
        # both rollouts at once (disjoint nodes; the parent's cache serves whatever it serves)
        gateway = client.deploy(
            {"name": "gateway", "model": big["ref"], "plan": PLAN,
             "selector": {"labels": {"role": "parent"}}}
        )  # fmt: skip
        _deploy(client, "site", lin["ref"], {"role": "child"})
        ended = client.wait_rollout(gateway["rollout_id"], DONE, 180)
        assert ended["state"] == "COMPLETED", ended["events"][-5:]
        uplink_gets = uplink.artifact_gets(lin["artifact_sha256"])
        fetches = [c.status()["tier"]["fetch"] for c in children]
        cache = parent.status()["tier"]["children"]["cache"]
        facts["rollout"] = {"uplink_gets_of_child_artifact": uplink_gets,
                            "children_fetch": fetches, "parent_cache": cache}  # fmt: skip
        assert uplink_gets == 1, uplink.gets
        assert [(f["parent"], f["control"]) for f in fetches] == [(1, 0)] * 3
        assert cache["upstream_downloads"] == 1 and cache["hits"] + cache["coalesced"] == 2
        for child in children:
            assert child.status()["active"]["sha256"] == lin["artifact_sha256"]

        phase("rollouts")
        # -- the cascade: the unsure row is answered by the parent's model, counted --------
        answer = children[0].infer_rows("lin", [UNSURE, sure])
        assert answer["parameters"]["answered_by"] == "parent"
        assert answer["parameters"]["escalated_rows"] == 1
        got, want_small, want_large = _outputs(answer), _run(small, [sure]), _run(large, [UNSURE])
        np.testing.assert_allclose(got[0], want_large[0], atol=1e-5)
        np.testing.assert_allclose(got[1], want_small[0], atol=1e-5)
        cascade = children[0].status()["tier"]["cascade"]
        assert (cascade["answered_by_parent"], cascade["fallbacks"]) == (1, 0), cascade
        metrics = children[0].http.get("/metrics").text
        assert 'edgeloop_cascade_calls_total{model="lin",tier="parent"} 1.0' in metrics
        assert 'edgeloop_tier_artifact_fetches_total{source="parent"} 1.0' in metrics

        phase("cascade")
        # -- a parent serving tampered bytes: the child's TUF check refuses them -----------
        v2 = client.publish_model(make_linear_onnx(tmp_path / "lin2.onnx", seed=2),
                                  _manifest("lin"))  # fmt: skip

        # The artifact is a signed target once a deployment names it; the child is frozen
        # (SIGSTOP) meanwhile so that the parent's cache is tampered with before it asks.
        def tamper_then_resume() -> None:
            try:
                _tamper_parent_cache(parent, children[1], v2)
            finally:
                children[1].proc.send_signal(signal.SIGCONT)

        children[1].proc.send_signal(signal.SIGSTOP)
        try:
            _deploy(client, "tampered", v2["ref"], {"idx": "1"}, tamper_then_resume)
        finally:
            children[1].proc.send_signal(signal.SIGCONT)
        fetch = children[1].status()["tier"]["fetch"]
        gets = uplink.artifact_gets(v2["artifact_sha256"])
        facts["tampered"] = {"child_fetch": fetch, "uplink_gets": gets}
        assert (fetch["parent_rejected"], fetch["control"]) == (1, 1), fetch
        assert children[1].status()["active"]["sha256"] == v2["artifact_sha256"]
        assert facts["tampered"]["uplink_gets"] == 2  # the parent's, then the child's own

        phase("tampered_rollout")
        # -- a hung parent (SIGSTOP): the cascade falls back after its timeout --------------
        parent.proc.send_signal(signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            hung = children[0].infer_rows("lin", [UNSURE, sure])
            facts["fallback_hung_parent_s"] = round(time.monotonic() - t0, 3)
        finally:
            parent.proc.send_signal(signal.SIGCONT)
        assert hung["parameters"]["answered_by"] == "fallback"
        assert 1.5 < facts["fallback_hung_parent_s"] < 6.0  # the cascade's 2 s timeout

        phase("hung_parent")
        # -- kill -9 of the parent: the children serve, the cascade falls back -------------
        parent.kill9()
        killed = time.monotonic()
        first = children[0].infer_rows("lin", [UNSURE, sure])
        facts["fallback_first_answer_s"] = round(time.monotonic() - killed, 3)
        assert first["parameters"]["answered_by"] == "fallback"
        np.testing.assert_allclose(_outputs(first), _run(small, [UNSURE, sure]), atol=1e-5)
        answers = [c.infer_rows("lin", [UNSURE]) for c in children for _ in range(5)]
        assert {a["parameters"]["answered_by"] for a in answers} == {"fallback"}
        cascades = [c.status()["tier"]["cascade"] for c in children]
        facts["after_kill"] = {"cascade": cascades}
        assert [c["fallbacks"] for c in cascades] == [7, 5, 5]  # child 0: + the hung parent's
        assert cascades[0]["fallbacks_by_error"] == {"TransportError": 7}

        phase("after_kill")
        # ... and a new artifact comes from the control plane directly
        v3 = client.publish_model(make_linear_onnx(tmp_path / "lin3.onnx", seed=3),
                                  _manifest("lin"))  # fmt: skip
        t0 = time.monotonic()
        _deploy(client, "parent-dead", v3["ref"], {"idx": "2"})
        fetch = children[2].status()["tier"]["fetch"]
        facts["parent_dead_rollout"] = {
            "child_fetch": fetch,
            "rollout_s": round(time.monotonic() - t0, 2),
        }
        assert (fetch["parent_failed"], fetch["control"]) == (1, 1), fetch
        assert children[2].status()["active"]["sha256"] == v3["artifact_sha256"]
        assert children[2].infer_rows("lin", [UNSURE])["model_version"] == str(v3["version"])
        phase("parent_dead_rollout")
    phase("teardown")  # four agents, the proxy and the control plane stopped
    facts["test_s"] = round(time.monotonic() - started, 1)
    print(json.dumps(facts))
    if out := os.environ.get("EDGELOOP_TIER_FACTS"):
        Path(out).write_text(json.dumps(facts, indent=2) + "\n")


def _terminate(agents: list[TierAgent]) -> None:
    """SIGTERM to every agent still running (not waited for: their stop() does that)."""
    for agent in agents:
        if agent.proc.poll() is None:
            agent.proc.terminate()


def _tamper_parent_cache(parent: TierAgent, child: TierAgent, published: dict[str, Any]) -> None:
    """Warm the parent's cache with ``published``'s artifact (asked with the child's own
    credentials), then flip its bytes on the parent's disk (same length): a compromised gateway."""
    node_id, token = child.credentials()
    sha = published["artifact_sha256"]
    leaf = f"{sha}.lin-{published['version']}.onnx"
    headers = {"Authorization": f"Bearer {token}", "X-Edgeloop-Node": node_id}
    answer = httpx.get(f"{parent.url}/tier/targets/artifacts/{leaf}", headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text
    cached = parent.home / "agent" / "tier-cache" / leaf
    data = bytearray(cached.read_bytes())
    data[-8:] = bytes(b ^ 0xFF for b in data[-8:])
    cached.write_bytes(bytes(data))
