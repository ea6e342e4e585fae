"""Incremental training on a node, asked through the control plane (control/train_api.py).

The caller puts the data files in the artifact store (``POST /api/v1/artifacts``: the new
samples as an ``.npz`` unless the node trains on its own labelled captures, and, when the
model's manifest names a data set, its original test split as the old data forgetting is
checked on and a share of its training split as the seed of the node's replay buffer), queues
the job (``POST /api/v1/node-trainings``) and polls it; the node's agent trains in its own
worker process, installs an accepted result as a node-local version and reports the figures
(agent/train_worker.py). Used by ``OnDeviceTraining().incremental_train(..., node=...)`` and
``edgeloop fleet train``. An edge variant without a checkpoint of its own is trained from its
parent's and quantized again on the node (control/train_api.py); ``summary``'s ``rebuilt``
says so.
"""

from __future__ import annotations

import io
import time
from typing import Any

import numpy as np

from edgeloop.core.errors import ConfigError, NotFoundError, TransportError
from edgeloop.sdk.control_client import ControlClient

POLL_S = 0.5
ENDED = ("done", "rejected", "failed")
REPLAY_SEED = 500  # training-split samples that start a node's replay buffer (its default size)


def put_npz(control: ControlClient, x: Any, y: Any, name: str = "data.npz") -> str:
    """Store ``(x, y)`` as an ``.npz`` artifact; its sha256."""
    buf = io.BytesIO()
    np.savez(buf, x=np.asarray(x, np.float32), y=np.asarray(y, np.int64))
    buf.seek(0)
    answer = control.call("POST", "/api/v1/artifacts", files={"file": (name, buf)})
    return str(answer["sha256"])


def reference_data(control: ControlClient, row: dict[str, Any]) -> dict[str, str]:
    """``{"old_data", "replay"}`` artifacts from the data set the model's manifest names (its
    test split; a seeded uniform share of its training split), as the library's SDK path and
    the retraining job split it (stratified, val 0.15, test 0.15, seed 0); {} when the manifest
    names none or it cannot be loaded here (the node then checks forgetting on a held-out slice
    of its replay buffer, or rejects the run with ``no_old_data``)."""
    from edgeloop.core.errors import EdgeError
    from edgeloop.data import load_data, stratified_split

    name = (row.get("manifest") or {}).get("dataset")
    if not name:
        return {}
    try:
        split = stratified_split(load_data(str(name)), val=0.15, test=0.15, seed=0)
    except EdgeError:
        return {}
    train = split.train
    pick = np.random.default_rng(0).permutation(len(train.y))[:REPLAY_SEED]
    return {
        "old_data": put_npz(control, split.test.x, split.test.y, "old.npz"),
        "replay": put_npz(control, train.x[pick], train.y[pick], "replay-seed.npz"),
    }


def start(
    control: ControlClient,
    node: str,
    model: str,
    epochs: int,
    data: str = "captures",
    *,
    files: dict[str, str] | None = None,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Queue the job; its record (``data``: ``"captures"`` or an artifact's sha256)."""
    body: dict[str, Any] = {"node": node, "model": model, "epochs": epochs, "data": data,
                            **(files or {}), "options": options or {}}  # fmt: skip
    job: dict[str, Any] = control.call("POST", "/api/v1/node-trainings", json=body)
    return job


def wait(control: ControlClient, job: dict[str, Any], timeout_s: float = 600.0) -> dict[str, Any]:
    """Poll until the job ended; the job (state done, rejected or failed).

    Raises:
        TransportError: no answer within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while job["state"] not in ENDED:
        if time.monotonic() > deadline:
            raise TransportError(
                f"node {job['node_id']} did not report training job {job['job_id']} within "
                f"{timeout_s:.0f} s (state {job['state']})",
                hint="is the node online? `edgeloop fleet nodes` shows when it last reported",
            )
        time.sleep(POLL_S)
        job = control.call("GET", f"/api/v1/node-trainings/{job['job_id']}")
    return job


def raise_failed(job: dict[str, Any]) -> None:
    """A failed job as the error it was: ConfigError for a node that cannot train or bad
    options, NotFoundError for a version the node does not serve, TransportError else."""
    if job["state"] != "failed":
        return
    error = str(job["error"])
    what = f"training {job['model']} on node {job['node_id']} failed: {error}"
    if "cannot train" in error or "ConfigError" in error or "DataError" in error:
        raise ConfigError(what, hint="see the node's capabilities: `edgeloop fleet nodes`")
    if "does not serve" in error:
        raise NotFoundError(what, hint="deploy the version to the node first")
    raise TransportError(what)


def summary(job: dict[str, Any]) -> dict[str, Any]:
    """The job's figures in one flat dict (the CLI's JSON, the SDK's result)."""
    r = job.get("result") or {}
    return {
        "job_id": job["job_id"], "node_id": job["node_id"], "model": job["model"],
        "state": job["state"], "error": job.get("error"), "installed": r.get("installed"),
        "lineage": r.get("lineage"), "accepted": r.get("accepted"),
        "reason": r.get("reason"), "outcome": r.get("outcome"),
        "new_accuracy_before": r.get("new_accuracy_before"),
        "new_accuracy_after": r.get("new_accuracy_after"),
        "old_accuracy_before": r.get("old_accuracy_before"),
        "old_accuracy_after": r.get("old_accuracy_after"),
        "forgetting_pp": r.get("forgetting_pp"), "old_source": r.get("old_source"),
        "data_source": r.get("data_source"), "epochs_run": r.get("epochs_run"),
        "worker_wall_s": r.get("worker_wall_s"), "run_wall_s": r.get("wall_seconds"),
        "peak_rss_mb": r.get("peak_rss_mb"), "train_peak_rss_mb": r.get("train_peak_rss_mb"),
        "new_train_samples": r.get("new_train_samples"),
        "new_holdout_samples": r.get("new_holdout_samples"), "rebuilt": _rebuilt(r),
    }  # fmt: skip


def _rebuilt(result: dict[str, Any]) -> str | None:
    """How an edge variant was made again on the node (its figures are then the rebuilt
    model's, scored with ONNX Runtime); None for a model trained as it is served."""
    done = result.get("rebuilt")
    if not isinstance(done, dict):
        return None
    return f"{done.get('recipe')} on {done.get('checkpoint')} ({done.get('from')})"
