"""The fleet stage: a local fleet of three, a staged rollout, a broken v2 caught.

Real processes throughout (:mod:`edgeloop.sdk.local_fleet`): one control plane and three agents on
loopback ports. The chosen variant is published to the control plane, rolled out in two waves
(one node, then the rest), and every node answers the held-out test split over HTTP, so the
accuracy reported per node is that of answers that crossed the wire. Then a v2 whose artifact is
deliberately broken (bytes that are no model) is rolled out the same way: the first wave's node
refuses it (no self-test can pass), the rollout halts and reverts that wave, and the other nodes
never receive it. Every figure is timed or counted in this run.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeloop.core.types import Manifest, ModelRef
from edgeloop.data.dataset import Dataset
from edgeloop.pipeline.stage import Skipped

if TYPE_CHECKING:
    from edgeloop.sdk.fl_data import FlData
    from edgeloop.sdk.local_fleet import LocalFleet

NODES = 3
PLAN: dict[str, Any] = {
    "waves": ["1", "100%"],
    "soak_s": 2,
    "watch_s": 2,
    "wave_timeout_s": 180,
    "guard": {"require_self_test": True, "max_error_rate": 0.0},
}
# Every node keeps the rows it answers within 10 min after a drift alarm of its monitor: the
# retrain stage makes its data set of them (docs/data.md#capture, docs/retraining.md).
CAPTURE: dict[str, Any] = {"policy": "drift:600", "max_bytes": 4 << 20}
ROLLOUT_TIMEOUT_S = 240.0
# A metrics snapshot each second: the monitor stage reads the fleet's table right after its stream.
AGENT_ARGS = ("--poll-s", "0.5", "--metrics-every-s", "1")
# The fleet's processes share this machine's cores with each other and the quickstart: torch in
# them (the retrain stage's job) runs on one thread (docs/retraining.md#quickstart-stage-retrain).
FLEET_ENV = {"OMP_NUM_THREADS": "1"}


@dataclass(frozen=True)
class FleetParent:
    """The model the rolled-out variant was made from: published first, with its checkpoint,
    so the fleet's registry holds the lineage a retraining job follows."""

    file: Path
    manifest: Manifest
    checkpoint: Path | None = None


@dataclass(frozen=True)
class FleetStageResult:
    nodes: tuple[dict[str, Any], ...]
    rollout: dict[str, Any]
    broken: dict[str, Any]
    live: LocalFleet | None = field(default=None, compare=False, repr=False)  # still running

    def to_dict(self) -> dict[str, Any]:
        body = {"nodes": list(self.nodes), "rollout": self.rollout, "broken_v2": self.broken}
        return {"fleet": body}


def fleet_stage(
    model: Path,
    manifest: Manifest,
    test: Dataset,
    folder: Path,
    profile: Path | None = None,
    hold: ExitStack | None = None,
    fl_data: FlData | None = None,
    parent: FleetParent | None = None,
) -> FleetStageResult | Skipped:
    """:func:`run_fleet_stage` in a fresh ``folder``; Skipped when the fleet extras are missing.

    Raises:
        EdgeError: from :func:`run_fleet_stage`.
    """
    import importlib.util

    missing = [m for m in ("tuf", "fastapi", "httpx") if importlib.util.find_spec(m) is None]
    if missing:
        return Skipped(f"not installed: {', '.join(missing)} (pip install 'edgeloop[control]')")
    if folder.exists():
        shutil.rmtree(folder)
    return run_fleet_stage(
        model, manifest, test, folder, profile, hold, fl_data=fl_data, parent=parent
    )


def run_fleet_stage(
    model: Path,
    manifest: Manifest,
    test: Dataset,
    folder: Path,
    profile: Path | None = None,
    hold: ExitStack | None = None,
    fl_data: FlData | None = None,
    parent: FleetParent | None = None,
) -> FleetStageResult:
    """Roll ``model`` out to a fresh local fleet under ``folder``, then a broken v2; stop it,
    or, given ``hold``, leave it running until ``hold`` closes (the result's ``live``).
    ``fl_data``: each agent's share for the federated stage, written before the agents start.
    ``parent``: published first, the variant linked to it (for the retrain stage's job).

    Raises:
        EdgeError: a process did not start, or a rollout did not finish in time.
    """
    from edgeloop.sdk.control_client import ControlClient
    from edgeloop.sdk.local_fleet import up

    started = up(folder, NODES, agent_args=AGENT_ARGS, fl_data=fl_data, env=FLEET_ENV)
    with (
        started if hold is None else nullcontext(hold.enter_context(started)) as fleet,
        ControlClient(fleet.control_url, fleet.admin_token) as admin,
    ):
        if parent is not None:  # the variant becomes its child in the fleet's registry
            up_ref = admin.publish_model(parent.file, parent.manifest, checkpoint=parent.checkpoint)
            manifest = dataclasses.replace(manifest, parent=ModelRef.parse(up_ref["ref"]))
        v1 = admin.publish_model(model, manifest, profile=profile)  # the node monitors with it
        rollout = _roll_out(admin, manifest.name, v1["ref"])
        by_id = {n["node_id"]: n["name"] for n in admin.nodes()}
        urls = {a.name: a.url for a in fleet.agents}
        served = {name: _serve_test_split(urls[name], manifest.name, test) for name in urls}

        broken_file = folder / f"{manifest.name}-v2-broken.onnx"
        broken_file.write_bytes(b"this is deliberately not a model\n" * 64)
        v2 = admin.publish_model(broken_file, dataclasses.replace(manifest, parent=None))
        broken = _roll_out(admin, manifest.name, v2["ref"])

        after = {n["name"]: n for n in admin.nodes()}
        nodes = []
        for name in sorted(urls):
            active = (after[name].get("reported") or {}).get("active") or {}
            nodes.append(
                {
                    "name": name,
                    "url": urls[name],
                    "device_class": after[name].get("device_class"),
                    "served_v1": served[name],
                    "active_after_broken_v2": active.get("version"),
                    "on_v1": active.get("sha256") == v1["artifact_sha256"],
                }
            )
        reached = [by_id[i] for i, n in broken["nodes"].items() if n.get("wave") == 0]
        parent_ref = None if manifest.parent is None else str(manifest.parent)
        return FleetStageResult(
            nodes=tuple(nodes),
            rollout={**_summary(rollout, by_id), "ref": v1["ref"], "parent": parent_ref},
            broken={
                **_summary(broken, by_id),
                "ref": v2["ref"],
                "reached": reached,
                "never_received": sorted(set(urls) - set(reached)),
            },
            live=None if hold is None else fleet,
        )


def _roll_out(admin: Any, name: str, ref: str) -> dict[str, Any]:
    start = time.perf_counter()
    spec = {"name": f"{name}-quickstart", "model": ref, "plan": PLAN,
            "serving": {"capture": CAPTURE}}  # fmt: skip
    rollout = admin.deploy(spec)
    end = admin.wait_rollout(
        rollout["rollout_id"], {"COMPLETED", "ROLLED_BACK", "HALTED"}, ROLLOUT_TIMEOUT_S
    )
    if end["state"] == "HALTED":  # reverting: wait until the wave reports its old model back
        end = admin.wait_rollout(rollout["rollout_id"], {"ROLLED_BACK"}, ROLLOUT_TIMEOUT_S)
    return {**end, "seconds": round(time.perf_counter() - start, 2)}


def _summary(rollout: dict[str, Any], by_id: dict[str, str]) -> dict[str, Any]:
    waves: dict[int, list[str]] = {}
    for node_id, n in rollout["nodes"].items():
        waves.setdefault(int(n["wave"]), []).append(by_id.get(node_id, node_id))
    return {
        "rollout_id": rollout["rollout_id"],
        "state": rollout["state"],
        "seconds": rollout["seconds"],
        "waves": [sorted(waves[w]) for w in sorted(waves)],
        "events": [e["state"] for e in rollout.get("events", [])],
    }


def _serve_test_split(url: str, name: str, test: Dataset) -> dict[str, Any]:
    """Send every test sample to the node (OIP v2 JSON), one per request; accuracy and timing."""
    import httpx

    correct, took = 0, []
    with httpx.Client(base_url=url, timeout=10.0) as client:
        for x, y in zip(test.x, test.y, strict=True):
            body = {
                "inputs": [
                    {
                        "name": "input",
                        "shape": [1, *x.shape],
                        "datatype": "FP32",
                        "data": x.ravel().tolist(),
                    }
                ]
            }
            t0 = time.perf_counter()
            r = client.post(f"/v2/models/{name}/infer", json=body)
            took.append(time.perf_counter() - t0)
            r.raise_for_status()
            scores = np.asarray(r.json()["outputs"][0]["data"])
            correct += int(int(scores.argmax()) == int(y))
    ms = np.asarray(took) * 1e3
    return {
        "requests": len(took),
        "accuracy": correct / len(took),
        "accuracy_split": f"{test.name} test ({len(test)} samples)",
        "latency_ms": {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99))},
    }
