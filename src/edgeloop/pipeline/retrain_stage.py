"""The retrain stage: the shifted field's captures -> a data set -> a job -> waves -> recovery.

It runs after the monitor stage, on the fleet the fleet stage left running. That fleet's
deployment carries a capture policy (``drift:600``, :data:`edgeloop.pipeline.fleet.CAPTURE`):
once the monitored node raised its drift alarm, it keeps the rows it answers. Then:

1. **field**: shifted samples of the champion's *train and validation* splits (the same shift
   the monitor stage injected) go through that node, each with a request id; their labels are
   posted back by request id (the data set's own labels: they stand in for a person's). The
   node captures the rows and their labels and ships them through its outbox.
2. **data set**: ``POST /api/v1/datasets/captures`` on the fleet's control plane turns the rows
   captured in the field stream's time range into a data set version, labels joined.
3. **before**: the *test* split, shifted and as it is, through the node (the champion).
4. **job**: ``POST /api/v1/jobs/retrain`` for the fp32 parent the fleet stage published with its
   checkpoint (the deployed edge variant is its child there): warm start from that checkpoint,
   a few epochs, the champion's edge recipe rebuilt on the challenger, registered only when it
   beats the champion on the recent hold-out and loses at most 1 pp on the original test split.
5. **rollout**: the rebuilt edge variant through the fleet's guarded waves.
6. **after**: the test split again, shifted and as it is, through the node (the challenger).
7. **on device**: a second shift, the node's own, and one incremental training run on the node
   itself for it (pipeline/retrain_on_device.py): before and after through the node, the
   node's own figures; a refused or rejected run is recorded with its reason.

The test split is never trained on in any form, so the recovery is measured on images no model
saw. Every figure was answered by the node or the control plane in this run.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeloop.core.errors import TransportError
from edgeloop.data.dataset import Dataset, Splits
from edgeloop.pipeline.monitor import Shift, _ok
from edgeloop.pipeline.retrain_stage_figures import Accuracy, recovery
from edgeloop.pipeline.retrain_stage_report import dataset_block, job_block
from edgeloop.pipeline.stage import Skipped

if TYPE_CHECKING:
    from edgeloop.sdk.control_client import ControlClient
    from edgeloop.sdk.local_fleet import LocalFleet

FIELD_SAMPLES = 300  # shifted train/val samples streamed as "the field" (captured, labelled)
EPOCHS = 8  # the job's epoch budget: a warm start needs few (docs/retraining.md)
BATCH = 64  # rows per request when measuring accuracy through the node
ARRIVAL_TIMEOUT_S = 60.0  # for the captures to reach the control plane
JOB_TIMEOUT_S = 900.0
DONE = {"succeeded", "failed", "cancelled"}
LABELS_NOTE = (
    "the labels posted back for the field samples are their own labels from the data set (its "
    "train and validation splits); they stand in for the labels a person would give"
)
Array = np.ndarray[Any, Any]


@dataclass(frozen=True)
class RetrainStageResult:
    """What the stage measured; ``to_dict()`` is the report's ``retrain`` block."""

    body: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"retrain": self.body}


@dataclass(frozen=True)
class Champion:
    """What the stage retrains: the fp32 parent on the fleet's registry and the served
    variant (its child there)."""

    parent: str | None  # NAME:VERSION on the fleet's control plane
    served: str  # the variant the fleet serves, NAME:VERSION


def retrain_stage(
    fleet: LocalFleet | None,
    champion: Champion,
    field: Dataset,
    test: Dataset,
    *,
    shift: Shift | None = None,
    seed: int = 0,
    epochs: int | None = None,
    field_samples: int | None = None,
) -> RetrainStageResult | Skipped:
    """:func:`run_retrain_stage` on the fleet the fleet stage left running; Skipped (with the
    reason) when there is none, no fp32 parent on it, or torch is missing. ``epochs`` and
    ``field_samples`` default to :data:`EPOCHS` and :data:`FIELD_SAMPLES`.

    Raises:
        EdgeError: from :func:`run_retrain_stage`.
    """
    import importlib.util

    if fleet is None:
        return Skipped("the fleet stage stopped its fleet (no running fleet was handed on)")
    if champion.parent is None:
        return Skipped("the fleet's registry has no fp32 parent of the served variant to retrain")
    if importlib.util.find_spec("torch") is None:
        return Skipped("not installed: torch (pip install 'edgeloop[train]')")
    return run_retrain_stage(
        fleet, champion, field, test, shift=shift or Shift(), seed=seed,
        epochs=epochs or EPOCHS, field_samples=field_samples or FIELD_SAMPLES,
    )  # fmt: skip


def run_retrain_stage(
    fleet: LocalFleet,
    champion: Champion,
    field: Dataset,
    test: Dataset,
    *,
    shift: Shift,
    seed: int,
    epochs: int,
    field_samples: int,
) -> RetrainStageResult | Skipped:
    """The stage's seven steps (module docstring) on the fleet's first node.

    Skipped when that node raised no drift alarm (its policy then captured nothing).

    Raises:
        TransportError: a node or control-plane call failed or timed out.
        EdgeError: the control plane refused the data set or the job (its message).
    """
    import httpx

    from edgeloop.sdk.control_client import ControlClient

    started, seconds = time.perf_counter(), {}
    node = fleet.agents[0]
    model = champion.served.rpartition(":")[0]
    span = float(np.asarray(test.x).max() - np.asarray(test.x).min())
    with (
        ControlClient(fleet.control_url, fleet.admin_token) as admin,
        httpx.Client(base_url=node.url, timeout=30.0) as client,
    ):
        node_id = next(n["node_id"] for n in admin.nodes() if n["name"] == node.name)
        view = _ok(client.get(f"/v2/models/{model}/monitor"), "monitor view")
        if not view.get("last_alarm"):
            return Skipped(f"{node.name} raised no drift alarm, so its capture policy kept nothing")
        t = time.perf_counter()
        xs, ys = field_stream(field, shift, span, field_samples, seed)
        since = _now()
        ids, labels = _stream_field(client, model, xs, ys)
        captured = _wait_captures(admin, node_id, model, ids)
        until = _now()  # rows are queued off the request path: the last ones after the stream
        seconds["field_stream_and_capture"] = time.perf_counter() - t
        t = time.perf_counter()
        made = admin.call("POST", "/api/v1/datasets/captures", json={
            "model": model, "name": f"{model}-field", "since": since, "until": until,
            "nodes": [node_id]})  # fmt: skip
        seconds["data_set"] = time.perf_counter() - t
        t = time.perf_counter()
        before = _measure(client, model, test, shift, span)
        seconds["measure_before"] = time.perf_counter() - t
        t = time.perf_counter()
        job = _run_job(admin, champion, made["ref"], epochs, seed)
        seconds["job"] = time.perf_counter() - t
        result = job.get("result") or {}
        new = result.get("edge") or result.get("challenger")
        body: dict[str, Any] = {
            "node": {"name": node.name, "node_id": node_id, "url": node.url},
            "champion": {"served": champion.served, "parent": champion.parent},
            "labels_note": LABELS_NOTE,
            "field": _field_block(field, shift, len(xs), labels, captured, seed),
            "dataset": dataset_block(made),
            "job": job_block(job, epochs),
            "accuracy_before": before.to_dict(),
        }
        if job["state"] != "succeeded" or not new:
            body["rollout"] = {"skipped": f"no challenger registered: {job['reason']}"}
            _on_device(body, seconds, admin, client, field, test, shift, span, seed)
            return _done(body, seconds, started)
        from edgeloop.pipeline.fleet import _roll_out, _summary

        t = time.perf_counter()
        rolled = _roll_out(admin, new.rpartition(":")[0], new)
        by_id = {n["node_id"]: n["name"] for n in admin.nodes()}
        seconds["rollout"] = time.perf_counter() - t
        body["rollout"] = {**_summary(rolled, by_id), "ref": new}
        t = time.perf_counter()
        after = _measure(client, new.rpartition(":")[0], test, shift, span)
        seconds["measure_after"] = time.perf_counter() - t
        body["accuracy_after"] = after.to_dict()
        body["nodes_after"] = _active(admin, by_id)
        body["recovery"] = recovery(before, after)
        _on_device(body, seconds, admin, client, field, test, shift, span, seed)
    return _done(body, seconds, started)


def _on_device(
    body: dict[str, Any], seconds: dict[str, float], admin: ControlClient, client: Any,
    field: Dataset, test: Dataset, shift: Shift, span: float, seed: int,
) -> None:  # fmt: skip
    """Step 7 (pipeline/retrain_on_device.py): one incremental training run on the node."""
    from edgeloop.pipeline.retrain_on_device import run_on_device

    t = time.perf_counter()
    node = {k: body["node"][k] for k in ("name", "node_id")}
    body["on_device"] = run_on_device(admin, client, node, field, test, first=shift, span=span,
                                      seed=seed)  # fmt: skip
    seconds["on_device"] = time.perf_counter() - t


def field_split(splits: Splits) -> Dataset:
    """The champion's train and validation splits as one set: where the "field" samples are
    drawn from, so that the test split stays unseen by every model in any form."""
    train, val = splits.train, splits.val
    return Dataset(
        f"{train.name} train+val",
        np.concatenate([train.x, val.x]).astype(np.float32),
        np.concatenate([train.y, val.y]).astype(np.int64),
        train.classes,
        train.modality,
        train.task,
    )


def field_stream(
    field: Dataset, shift: Shift, span: float, n: int, seed: int
) -> tuple[Array, Array]:
    """``n`` samples of ``field`` drawn without replacement in a seeded order, shifted (the
    offset a share of ``span``, the held-out split's value range, as the monitor stage's)."""
    rng = np.random.default_rng(seed + 1)  # the monitor stage orders its passes with ``seed``
    pick = rng.permutation(len(field))[: min(n, len(field))]
    x = np.asarray(field.x, dtype=np.float32)[pick]
    return shift.apply(x, span), np.asarray(field.y)[pick].astype(np.int64)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _tensor(x: Array) -> dict[str, Any]:
    return {"name": "input", "shape": list(x.shape), "datatype": "FP32",
            "data": x.ravel().tolist()}  # fmt: skip


def _stream_field(
    client: Any, model: str, xs: Array, ys: Array
) -> tuple[list[str], dict[str, int]]:
    """Each row to the node with an id; the labels back by id every 10 requests."""
    ids: list[str] = []
    waiting: list[dict[str, Any]] = []
    counts = {"posted": 0, "applied": 0, "unknown": 0}
    for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
        rid = f"quickstart-field-{i}"
        body = {"id": rid, "inputs": [_tensor(x[None])]}
        _ok(client.post(f"/v2/models/{model}/infer", json=body), "infer")
        ids.append(rid)
        waiting.append({"request_id": rid, "label": int(y)})
        if len(waiting) == 10 or i + 1 == len(xs):
            answer = _ok(client.post(f"/v2/models/{model}/labels", json={"labels": waiting}),
                         "labels")  # fmt: skip
            counts["posted"] += len(waiting)
            counts["applied"] += int(answer["applied"])
            counts["unknown"] += int(answer["unknown"])
            waiting = []
    return ids, counts


def _wait_captures(
    admin: ControlClient, node_id: str, model: str, ids: list[str]
) -> dict[str, int]:
    """Wait until every field row the node captured, and the label of each, reached the
    control plane; the counts. The node's own count of kept rows says how many to expect."""
    wanted = set(ids)
    deadline = time.monotonic() + ARRIVAL_TIMEOUT_S
    while True:
        items = admin.telemetry(kind="capture", node=node_id, model=model, limit=100_000)
        rows = [i["payload"] for i in items if isinstance(i.get("payload"), dict)
                and i["payload"].get("request_id") in wanted]  # fmt: skip
        samples = {r["request_id"] for r in rows if r.get("type") == "sample"}
        labels = {r["request_id"] for r in rows if r.get("type") == "label"}
        if samples and samples <= labels and len(samples) == len(wanted):
            break
        if time.monotonic() > deadline:
            if samples and samples <= labels:
                break  # some rows were not kept (a bound of the policy): go on with these
            raise TransportError(
                f"{len(samples)} captured field rows and {len(labels)} labels of {len(ids)} "
                f"reached the control plane within {ARRIVAL_TIMEOUT_S:.0f} s",
                hint="see the node's capture counts in GET /agent/status and its agent.log",
            )
        time.sleep(0.3)
    return {"streamed": len(ids), "captured": len(samples), "labels_arrived": len(labels)}


def _run_job(
    admin: ControlClient, champion: Champion, data: str, epochs: int, seed: int
) -> dict[str, Any]:
    """Queue the job on the fleet's control plane and follow it to its end state; adds
    ``cpu_seconds``: the job process's CPU (its workers' included once it waited for them),
    read from /proc every 0.5 s while it ran (None where there is no /proc)."""
    spec = {"model": champion.parent, "data": [data], "epochs": epochs, "seed": seed}
    job: dict[str, Any] = admin.call("POST", "/api/v1/jobs/retrain", json=spec)
    deadline = time.monotonic() + JOB_TIMEOUT_S
    pid, cpu = None, None
    while job["state"] not in DONE:
        if time.monotonic() > deadline:
            admin.call("POST", f"/api/v1/jobs/{job['id']}/cancel")
            raise TransportError(
                f"retraining job {job['id']} is {job['state']} (step {job['step']}) after "
                f"{JOB_TIMEOUT_S:.0f} s; it was cancelled",
                hint="see its log: GET /api/v1/jobs/ID on the fleet's control plane",
            )
        time.sleep(0.5)
        pid = pid or _job_pid(job["id"])
        cpu = _cpu_seconds(pid) or cpu
        job = admin.call("GET", f"/api/v1/jobs/{job['id']}")
    return {**job, "cpu_seconds": None if cpu is None else round(cpu, 1)}


def _job_pid(job_id: str) -> int | None:
    """The pid of ``python -m edgeloop.pipeline.retrain_job JOB_ID`` on this machine."""
    wanted = f"edgeloop.pipeline.retrain_job\0{job_id}".encode()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if wanted in (proc / "cmdline").read_bytes():
                return int(proc.name)
        except OSError:
            continue
    return None


def _cpu_seconds(pid: int | None) -> float | None:
    """utime + stime + cutime + cstime of ``pid`` in seconds; None when it is gone."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _measure(client: Any, model: str, test: Dataset, shift: Shift, span: float) -> Accuracy:
    """The node's answers on the test split as it is and shifted, ``BATCH`` rows a request."""
    x = np.asarray(test.x, dtype=np.float32)
    y = np.asarray(test.y)
    return Accuracy(
        version=str(_ok(client.get(f"/v2/models/{model}/monitor"), "monitor view")["version"]),
        original=_correct(client, model, x, y),
        shifted=_correct(client, model, shift.apply(x, span), y),
        samples=len(y),
        split=f"{test.name} test",
    )  # fmt: skip


def _correct(client: Any, model: str, x: Array, y: Array) -> int:
    right = 0
    for at in range(0, len(x), BATCH):
        rows = x[at : at + BATCH]
        answer = _ok(client.post(f"/v2/models/{model}/infer",
                                 json={"inputs": [_tensor(rows)]}), "infer")  # fmt: skip
        out = answer["outputs"][0]
        scores = np.asarray(out["data"], dtype=np.float64).reshape(out["shape"])
        right += int((scores.argmax(axis=1) == y[at : at + BATCH]).sum())
    return right


def _active(admin: ControlClient, by_id: dict[str, str]) -> dict[str, Any]:
    found = {}
    for n in admin.nodes():
        active = (n.get("reported") or {}).get("active") or {}
        found[by_id.get(n["node_id"], n["node_id"])] = active.get("version")
    return dict(sorted(found.items()))


def _field_block(
    field: Dataset, shift: Shift, n: int, labels: dict[str, int], captured: dict[str, int],
    seed: int,
) -> dict[str, Any]:  # fmt: skip
    return {
        "samples": n,
        "drawn_from": f"{field.name} ({len(field)} samples: the champion's train and validation "
        f"splits; never its test split), seeded order (seed {seed + 1})",
        "shift": shift.to_dict(),
        "labels": labels,
        **captured,
    }


def _done(body: dict[str, Any], seconds: dict[str, float], started: float) -> RetrainStageResult:
    body["seconds"] = round(time.perf_counter() - started, 2)
    body["seconds_parts"] = {k: round(v, 2) for k, v in seconds.items()}
    return RetrainStageResult(body)
