"""The monitor stage: the fleet's drift monitor at work on one real node, a shift injected.

It runs after the fleet stage, on the fleet that stage left running (its three agents serve the
edge variant with the reference profile made at registration). One node gets a stream of the
held-out split, twice, each pass in its own seeded order: first as it is, then with a shift
applied to every sample (by default a washed-out camera: lower contrast, more brightness).
Every request carries an id; the split's own labels are posted back for those ids in small
batches, standing in for the labels a person would give. After every request the node's
``GET /v2/models/{m}/monitor`` is read, so the drift score and the windowed true and estimated
accuracy are traced sample by sample as the node computes them.

Then the stage reads what reached the control plane: the drift event as it stored it (item id,
the node's time, the time it was received), the fleet's monitoring rows once a metrics snapshot
covering the whole stream arrived, and the table ``edgeloop fleet monitor`` prints for them (run
as its own process). Nothing here is computed on the client's side: every figure was reported
by the node or the control plane in this run. :mod:`edgeloop.pipeline.monitor_report` draws
the plot and the report's section.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeloop.core.errors import ConfigError, TransportError
from edgeloop.data.dataset import Dataset
from edgeloop.pipeline.stage import Skipped

if TYPE_CHECKING:
    from edgeloop.sdk.local_fleet import LocalFleet

LABEL_EVERY = 10  # requests between two label batches: labels come back a little late
VIEW_EVERY = 5  # requests between two reads of the node's monitor view (the plot's resolution)
ARRIVAL_TIMEOUT_S = 30.0  # for the drift event and a metrics snapshot to reach the control plane
LABELS_NOTE = (
    "labels posted back are the held-out split's own labels from the data set; they stand in "
    "for the labels a person (or a downstream system) would give"
)
Array = np.ndarray[Any, Any]


@dataclass(frozen=True, slots=True)
class Shift:
    """The change injected into the stream: ``x -> gain * x + offset * (max - min)``, with
    max and min those of the held-out split (so the offset is a share of its value range)."""

    gain: float = 0.5
    offset: float = 0.3
    name: str = "washed-out camera (contrast halved, brightness +30 % of the range)"

    def __post_init__(self) -> None:
        if not (np.isfinite(self.gain) and np.isfinite(self.offset)) or self.gain <= 0:
            raise ConfigError(
                f"shift gain={self.gain}, offset={self.offset}: expected a finite gain > 0 and "
                "a finite offset",
                hint="e.g. Shift(gain=0.5, offset=0.3)",
            )
        if self.gain == 1 and self.offset == 0:
            raise ConfigError(
                "shift gain=1, offset=0 changes nothing: there would be nothing to detect",
                hint="e.g. Shift(gain=0.5, offset=0.3)",
            )

    def apply(self, x: Array, span: float) -> Array:
        return (x * self.gain + self.offset * span).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        formula = "x -> gain * x + offset * (max - min of the held-out split)"
        return {"name": self.name, "gain": self.gain, "offset": self.offset, "formula": formula}


@dataclass(frozen=True)
class MonitorStageResult:
    """What the stage measured; ``to_dict()`` is the report's ``monitor`` block."""

    body: dict[str, Any]
    trace: dict[str, list[float | None]] = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"monitor": self.body}


def monitor_stage(
    fleet: LocalFleet | None,
    model: str,
    test: Dataset,
    out_dir: Path,
    *,
    shift: Shift | None = None,
    seed: int = 0,
) -> MonitorStageResult | Skipped:
    """:func:`run_monitor_stage` on the fleet the fleet stage left running.

    Raises:
        EdgeError: from :func:`run_monitor_stage`.
    """
    if fleet is None:
        return Skipped("the fleet stage stopped its fleet (no running fleet was handed on)")
    return run_monitor_stage(fleet, model, test, out_dir, shift=shift or Shift(), seed=seed)


def run_monitor_stage(
    fleet: LocalFleet, model: str, test: Dataset, out_dir: Path, *, shift: Shift, seed: int = 0
) -> MonitorStageResult | Skipped:
    """Stream the held-out split (then a shifted pass) through the fleet's first node; read the
    alarm, its event on the control plane, the fleet's table; plot into ``out_dir``.

    Skipped (with the node's reason) when the node serves ``model`` without a monitor.

    Raises:
        TransportError: a node or control-plane call failed or timed out.
    """
    import httpx

    from edgeloop.pipeline.monitor_report import plot_monitor
    from edgeloop.sdk.control_client import ControlClient

    started = time.perf_counter()
    node = fleet.agents[0]
    xs, ys, shift_at = stream(test, shift, seed)
    with (
        ControlClient(fleet.control_url, fleet.admin_token) as admin,
        httpx.Client(base_url=node.url, timeout=10.0) as client,
    ):
        names = {n["node_id"]: n["name"] for n in admin.nodes()}
        node_id = next(i for i, name in names.items() if name == node.name)
        first = _view(client, model)
        if first.get("state") != "active":
            return Skipped(f"{node.name} serves {model} without a monitor: {first.get('reason')}")
        base = int(first["samples_seen"])
        streamed = time.perf_counter()
        trace, labels = _stream(client, model, xs, ys, shift_at)
        stream_s = time.perf_counter() - streamed
        last = _view(client, model)
        version = str(last["version"])
        waited = time.perf_counter()
        events = _events(admin, node_id, model, base, shift_at, last)
        rows = _rows(admin, model, version, node_id, base + len(xs))
        wait_s = time.perf_counter() - waited
    tabled = time.perf_counter()
    table = fleet_monitor_table(fleet.folder, model)
    table_s = time.perf_counter() - tabled
    alarm = events["alarm"]
    alarm_at = None if alarm is None else alarm["payload"]["sample_index"] - base
    plot = out_dir / "monitor_drift.png"
    plot_monitor(trace, shift_at, alarm_at, plot, title=f"{node.name}, {model}:{version}")
    body = {
        "node": {"name": node.name, "node_id": node_id, "url": node.url},
        "model": model,
        "version": version,
        "labels_note": LABELS_NOTE,
        "stream": {
            "samples": len(xs),
            "shift_at": shift_at,
            "shift": shift.to_dict(),
            "order": f"the {test.name} held-out split ({len(test)} samples) twice, each pass "
            f"shuffled (seed {seed}); the second pass shifted",
            "monitor_samples_before": base,
            "monitor_samples_after": int(last["samples_seen"]),
            "dropped": last.get("dropped"),
        },
        "labels": labels,
        "alarm": _alarm_block(alarm, base, shift_at),
        "false_alarms_before_shift": len(events["before_shift"]),
        "alarms_before_shift": events["before_shift"],
        "degradation": events["degradation"],
        "accuracy": {
            "window": last["performance"]["window"],
            "before_shift": _accuracy(trace, shift_at - 1),
            "after_shift": _accuracy(trace, len(xs) - 1),
            "reference_accuracy": last["profile"]["reference_accuracy"],
        },
        "fleet_monitor": {
            "rows": [{**r, "node_name": names.get(r["node_id"])} for r in rows],
            "table": table,
            "command": f"edgeloop fleet monitor --dir {fleet.folder} --model {model}",
        },
        "plot": str(plot),
        "seconds": round(time.perf_counter() - started, 2),
        "seconds_parts": {"stream": round(stream_s, 2), "waiting_for_control_plane":
                          round(wait_s, 2), "fleet_monitor_command": round(table_s, 2)},
    }  # fmt: skip
    return MonitorStageResult(body, trace)


def stream(test: Dataset, shift: Shift, seed: int) -> tuple[Array, Array, int]:
    """The held-out split in a seeded order, then again in another order with ``shift``
    applied; the labels; the index of the first shifted sample."""
    rng = np.random.default_rng(seed)
    clean, shifted = rng.permutation(len(test)), rng.permutation(len(test))
    x = np.asarray(test.x, dtype=np.float32)
    span = float(x.max() - x.min())
    xs = np.concatenate([x[clean], shift.apply(x[shifted], span)])
    ys = np.concatenate([np.asarray(test.y)[clean], np.asarray(test.y)[shifted]])
    return xs, ys.astype(np.int64), len(test)


def _stream(
    client: Any, model: str, xs: Array, ys: Array, shift_at: int
) -> tuple[dict[str, list[float | None]], dict[str, Any]]:
    """Each sample to the node (OIP v2 JSON, with an id), labels back every ``LABEL_EVERY``
    requests and at the shift, the node's monitor view after each; the trace and label counts."""
    trace: dict[str, list[float | None]] = {
        k: []
        for k in (
            "sample",
            "input",
            "prediction",
            "confidence",
            "accuracy",
            "estimated",
            "labelled",
        )
    }
    waiting: list[dict[str, Any]] = []
    counts = {"posted": 0, "applied": 0, "unknown": 0, "batches": 0, "every": LABEL_EVERY}
    for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
        rid = f"quickstart-monitor-{i}"
        tensor = {"name": "input", "shape": [1, *x.shape], "datatype": "FP32",
                  "data": x.ravel().tolist()}  # fmt: skip
        body = {"id": rid, "inputs": [tensor]}
        _ok(client.post(f"/v2/models/{model}/infer", json=body), "infer")
        waiting.append({"request_id": rid, "label": int(y)})
        if len(waiting) == LABEL_EVERY or i + 1 in (shift_at, len(xs)):
            answer = _ok(client.post(f"/v2/models/{model}/labels", json={"labels": waiting}),
                         "labels")  # fmt: skip
            counts["posted"] += len(waiting)
            counts["applied"] += int(answer["applied"])
            counts["unknown"] += int(answer["unknown"])
            counts["batches"] += 1
            waiting = []
        if (i + 1) % VIEW_EVERY and i + 1 not in (shift_at, len(xs)):
            continue
        view = _view(client, model)
        trace["sample"].append(i)
        scores = view.get("scores") or {}
        for kind in ("input", "prediction", "confidence"):
            trace[kind].append((scores.get(kind) or {}).get("ratio"))
        perf = view["performance"]
        trace["accuracy"].append(perf["accuracy"])
        trace["estimated"].append(perf["estimated_accuracy"])
        trace["labelled"].append(perf["labelled"])
    return trace, counts


def _view(client: Any, model: str) -> dict[str, Any]:
    found: dict[str, Any] = _ok(client.get(f"/v2/models/{model}/monitor"), "monitor view")
    return found


def _ok(response: Any, what: str) -> Any:
    if response.status_code != 200:
        raise TransportError(
            f"the node answered {what} with HTTP {response.status_code}: {response.text[:300]}",
            hint="see the node's log in the fleet folder (node-1/agent.log)",
        )
    return response.json()


def _events(
    admin: Any, node_id: str, model: str, base: int, shift_at: int, last: dict[str, Any]
) -> dict[str, Any]:
    """The node's monitor events of this stream as the control plane stored them; waits for
    the first drift alarm after the shift when the node raised one."""
    start = base + shift_at
    raised = (last.get("last_alarm") or {}).get("sample_index", -1) >= start or any(
        v for v in (last.get("alarms") or {}).values()
    )
    deadline = time.monotonic() + ARRIVAL_TIMEOUT_S
    while True:
        items = admin.telemetry(kind="event", node=node_id, model=model, limit=10_000)
        mine = [i for i in items if isinstance(i.get("payload"), dict)
                and i["payload"].get("type") in ("drift", "degradation")
                and int(i["payload"].get("sample_index", -1)) >= base]  # fmt: skip
        drift = [i for i in mine if i["payload"]["type"] == "drift"]
        after = [i for i in drift if i["payload"]["sample_index"] >= start]
        if after or not raised or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    degraded = [i for i in mine if i["payload"]["type"] == "degradation"]
    return {
        "alarm": min(after, key=lambda i: i["payload"]["sample_index"]) if after else None,
        "before_shift": [
            {"kind": i["payload"]["kind"], "stream_index": int(i["payload"]["sample_index"]) - base}
            for i in drift
            if i["payload"]["sample_index"] < start
        ],
        "degradation": _event_doc(degraded[0], base) if degraded else None,
    }


def _event_doc(item: dict[str, Any], base: int) -> dict[str, Any]:
    p = item["payload"]
    return {
        "telemetry_id": item["id"],
        "created_at_node": item["created_at"],
        "received_at_control": item["received_at"],
        "kind": p["kind"],
        "score": p["score"],
        "threshold": p["threshold"],
        "stream_index": int(p["sample_index"]) - base,
        "detail": p.get("detail"),
    }


def _alarm_block(item: dict[str, Any] | None, base: int, shift_at: int) -> dict[str, Any]:
    if item is None:
        return {"delay_samples": None, "reason": "the node raised no drift alarm after the shift"}
    doc = _event_doc(item, base)
    return {
        **doc,
        "delay_samples": doc["stream_index"] - shift_at,
        "delay_note": "shifted samples served before the alarming one (0: the first)",
        "top_features": item["payload"].get("top_features"),
    }


def _accuracy(trace: dict[str, list[float | None]], sample: int) -> dict[str, Any]:
    """The node's windowed accuracies as read right after ``sample`` (and its labels)."""
    i = trace["sample"].index(sample)
    return {"at_sample": sample, "true": trace["accuracy"][i],
            "estimated": trace["estimated"][i], "labelled": trace["labelled"][i]}  # fmt: skip


def _rows(admin: Any, model: str, version: str, node_id: str, seen: int) -> list[dict[str, Any]]:
    """The fleet's monitoring rows of ``model:version`` once the node's row covers ``seen``
    samples (a metrics snapshot after the stream arrived)."""
    deadline = time.monotonic() + ARRIVAL_TIMEOUT_S
    while True:
        found = admin.call("GET", "/api/v1/monitoring", params={"model": model, "version": version})
        rows: list[dict[str, Any]] = found["rows"]
        node = [r for r in rows if r["node_id"] == node_id]
        if node and (node[0].get("samples_seen") or 0) >= seen:
            return rows
        if time.monotonic() > deadline:
            raise TransportError(
                f"no metrics snapshot of {node_id} covering {seen} samples reached the control "
                f"plane within {ARRIVAL_TIMEOUT_S:.0f} s",
                hint="the agents must run with a short --metrics-every-s (the fleet stage's do)",
            )
        time.sleep(0.3)


def fleet_monitor_table(folder: Path, model: str) -> str:
    """The table ``edgeloop fleet monitor --dir FOLDER --model MODEL`` prints, run as its own
    process (as a user would).

    Raises:
        TransportError: the command failed (its output is named).
    """
    args = [sys.executable, "-m", "edgeloop.cli.app", "fleet", "monitor", "--dir", str(folder),
            "--model", model]  # fmt: skip
    env = {**os.environ, "COLUMNS": "140", "NO_COLOR": "1", "TERM": "dumb"}
    done = subprocess.run(args, capture_output=True, text=True, timeout=60, env=env, check=False)
    if done.returncode != 0:
        raise TransportError(
            f"`edgeloop fleet monitor` exited {done.returncode}: {done.stderr[-500:]}",
            hint=f"run it by hand: edgeloop fleet monitor --dir {folder}",
        )
    return str(done.stdout).rstrip()
