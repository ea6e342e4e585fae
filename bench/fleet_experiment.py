"""Two fleet A/B experiments end to end on real processes: one promotes, one keeps the control.

    .venv/bin/python bench/fleet_experiment.py [--nodes 2] [--batch 40] [--max-requests 4000]
        [--mixing normal|two_point]     # left out: the control plane's default (two_point)

A control plane (``edgeloop control``) and ``--nodes`` agents (``edgeloop agent``), all OS
processes on loopback. Three versions of a 4-feature, 3-class linear classifier ``lin``: v2 is
the reference, v1 and v3 are v2 with its weights perturbed (v3 more). The ground truth of an
input is v2's class, replaced by another class on 10 % of the inputs (a fixed seeded draw: the
labels are synthetic, the accuracies are measured on them). So v2 is the best version, v1 worse,
v3 worse still.

Experiment A: champion 1, challenger 2 (split 0.5). Experiment B: champion 2, challenger 3.
Each runs: start (the rollout of the champion with the challenger beside it), then batches of
``--batch`` requests spread over the nodes, each labelled through the node's ``/predict/labels``,
and after each batch one look (``GET /api/v1/experiments/{id}``), until the sequential test
decides or ``--max-requests``. A promote_treatment decision is promoted, keep_control reverted.

Prints one JSON object: per experiment the decision, the looks and requests it took, the
per-arm figures and evidence at the decision, and the seconds each step took.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.agent.agent_process import AgentProcess  # noqa: E402
from tests.control.process import control_process  # noqa: E402

from edgeloop.core.settings import Settings  # noqa: E402
from edgeloop.core.types import Manifest, TensorSpec  # noqa: E402
from edgeloop.registry import Registry  # noqa: E402
from edgeloop.registry.profiles import profile_model  # noqa: E402
from edgeloop.sdk.control_client import ControlClient  # noqa: E402

MANIFEST = Manifest("lin", "onnx", (TensorSpec("input", (None, 4)),),
                    (TensorSpec("output", (None, 3)),))  # fmt: skip
NOISE = 0.10  # the share of inputs whose true class is not v2's answer
PERTURB = {1: 0.3, 2: 0.0, 3: 0.2}  # each version's weight noise, in units of N(0, 1)
OVER = {"COMPLETED", "HALTED", "ROLLED_BACK"}


def linear(path: Path, w: np.ndarray, b: np.ndarray) -> Path:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "W"], ["z"]),
         helper.make_node("Add", ["z", "B"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["output"], axis=-1)],
        "linear",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 3])],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def models(folder: Path) -> tuple[dict[int, Path], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    files = {}
    for version, scale in PERTURB.items():
        noise = rng.standard_normal((4, 3)).astype(np.float32)
        files[version] = linear(folder / f"v{version}.onnx", w + scale * noise, b)
    return files, w, b


def truth_of(x: np.ndarray, w: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """v2's class, replaced by another class on NOISE of the rows."""
    cls = np.argmax(x @ w + b, axis=1)
    flip = rng.random(len(x)) < NOISE
    other = (cls + rng.integers(1, 3, len(x))) % 3
    return np.where(flip, other, cls)


def _labelled(doc: dict[str, Any]) -> int:
    arms = doc.get("arms") or {}
    return sum(int((arms.get(a) or {}).get("labelled") or 0) for a in ("champion", "challenger"))


def wait(check: Any, timeout_s: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.2)
    raise TimeoutError("condition not reached")


def experiment(client: ControlClient, agents: list[AgentProcess], champion: int,
               challenger: int, args: argparse.Namespace, w: np.ndarray,
               b: np.ndarray) -> dict[str, Any]:  # fmt: skip
    body = {"name": f"lin-{champion}-vs-{challenger}", "model": "lin", "champion": champion,
            "challenger": challenger, "split": 0.5, "metric": "accuracy",
            "min_effect": args.min_effect, "plan": {"soak_s": 0, "watch_s": 1}}  # fmt: skip
    if args.mixing:
        body["mixing"] = args.mixing
    t0 = time.monotonic()
    exp_id = client.call("POST", "/api/v1/experiments", json=body)["experiment_id"]

    def status() -> dict[str, Any]:
        return dict(client.call("GET", f"/api/v1/experiments/{exp_id}"))

    def serving() -> bool:
        doc = status()
        nodes = doc.get("node_status") or {}
        return doc["state"] == "RUNNING" and all(n["state"] == "serving" for n in nodes.values())

    wait(serving)
    started_s = time.monotonic() - t0
    rng = np.random.default_rng(challenger)
    sent, looks, doc = 0, 0, status()
    t1 = time.monotonic()
    while sent < args.max_requests and doc.get("decision") in (None, "continue"):
        x = rng.standard_normal((args.batch, 4)).astype(np.float32)
        y = truth_of(x, w, b, rng)
        labels: dict[int, list[dict[str, Any]]] = {i: [] for i in range(len(agents))}
        for j, (row, label) in enumerate(zip(x, y, strict=True)):
            i = j % len(agents)
            rid = f"{exp_id}-{sent + j}"
            answer = agents[i].http.post("/predict", json={"features": row.tolist(),
                                                           "request_id": rid})  # fmt: skip
            answer.raise_for_status()
            labels[i].append({"request_id": rid, "label": int(label)})
        for i, items in labels.items():
            agents[i].http.post("/predict/labels", json={"labels": items}).raise_for_status()
        sent += args.batch
        wait(lambda n=sent: _labelled(status()) >= n)
        doc = status()
        looks += 1
    decided_s = time.monotonic() - t1
    decision = doc.get("decision")
    step = "promote" if decision == "promote_treatment" else "revert"
    t2 = time.monotonic()
    path = f"/api/v1/experiments/{exp_id}/{step}"
    client.call("POST", path, json={} if step == "revert" else {"force": False})
    final = "PROMOTED" if step == "promote" else "REVERTED"
    wait(lambda: status()["state"] == final)
    return {
        "experiment": f"champion {champion} vs challenger {challenger}",
        "decision": decision,
        "mixing": doc["config"].get("mixing"),  # as stored: the default when none was sent
        "then": step,
        "final_state": final,
        "looks": looks,
        "requests": sent,
        "arms": doc["arms"],
        "evidence": (doc.get("evidence") or {}).get("primary"),
        "seconds": {"start_to_serving": round(started_s, 2),
                    "traffic_to_decision": round(decided_s, 2),
                    f"{step}_rollout": round(time.monotonic() - t2, 2)},
    }  # fmt: skip


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--max-requests", type=int, default=6000)
    parser.add_argument("--min-effect", type=float, default=0.05)
    parser.add_argument(
        "--mixing", choices=["normal", "two_point"], default=None,
        help="sent with each start; left out, the control plane's default",
    )  # fmt: skip
    args = parser.parse_args()
    load_start = list(os.getloadavg())  # 1, 5, 15 min: the machine is shared
    with tempfile.TemporaryDirectory(prefix="edgeloop-exp-") as tmp_name:
        tmp = Path(tmp_name)
        files, w, b = models(tmp)
        reference = np.random.default_rng(1).standard_normal((200, 4)).astype(np.float32)
        with Registry.open(Settings.load(tmp / "local")) as registry:
            local = {v: registry.publish(f, MANIFEST, profile=profile_model(f, reference))
                     for v, f in files.items()}  # fmt: skip
            profiles = {v: registry.profile(r.ref)[1] for v, r in local.items()}
        with control_process(tmp / "ctl", None, "--tick-s", "0.1") as ctl:
            token = (tmp / "ctl" / "control" / "admin.token").read_text().strip()
            with ControlClient(ctl.url, token) as client:
                for v in sorted(files):
                    client.publish_version(files[v], local[v], profile=profiles[v])
                agents = [AgentProcess(tmp / f"node{i}", ctl.url, poll_s=0.5,
                                       enroll_token=client.enrollment_token()["token"])
                          for i in range(args.nodes)]  # fmt: skip
                try:
                    for agent in agents:
                        agent.wait_enrolled()
                    wait(lambda: all(n["last_seen"] for n in client.nodes()))
                    runs = [experiment(client, agents, 1, 2, args, w, b),
                            experiment(client, agents, 2, 3, args, w, b)]  # fmt: skip
                finally:
                    for agent in agents:
                        agent.stop()
    print(json.dumps({
        "command": "bench/fleet_experiment.py " + " ".join(sys.argv[1:]),
        "nodes": args.nodes, "batch": args.batch, "min_effect": args.min_effect,
        "label_noise": NOISE, "cpu": _cpu(),
        "load_avg": {"start": load_start, "end": list(os.getloadavg())},
        "runs": runs,
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
