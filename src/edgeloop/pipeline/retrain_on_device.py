"""The retrain stage's last step: one on-device incremental training run on the stage's node.

After the central job's challenger was rolled out (or, when the job refused it, with the
champion still served), the node sees a condition of its own: a *second* shift, different
from the stage's first (:data:`NODE_SHIFT`), standing for that node's own camera. Then:

1. **before**: the test split with the second shift and as it is, through the node's server.
2. **data**: :data:`NODE_SAMPLES` samples of the champion's train and validation splits (the
   stage's ``field``, never its test split), with the second shift and their own labels, put
   in the control plane's artifact store as the job's ``data`` (the SDK's new-data path: these
   labels stand in for the node's own labelled data); the old data the node checks forgetting
   on is the original test split, as :func:`edgeloop.sdk.node_training.reference_data` sends
   it, and the replay seed is a seeded share of ``field``.
3. **job**: ``POST /api/v1/node-trainings`` for the version the node serves (the fp32
   challenger, or an INT8 edge variant the node rebuilds from its parent's checkpoint); the
   node's agent trains in its own worker process (one thread, :data:`NODE_EPOCHS` epochs) and
   installs an accepted result as a node-local version (``NAME:V+node-1.N``).
4. **after**: the same two passes through the node's server, and the node's own report of what
   it serves (``GET /agent/status``).

A run the control plane refuses (a recipe the node cannot redo, named) or the node rejects
(forgetting, no gain) is recorded with its reason: the stage does not fail on it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeloop.core.errors import EdgeError
from edgeloop.data.dataset import Dataset
from edgeloop.pipeline.monitor import Shift, _ok
from edgeloop.pipeline.retrain_stage_figures import Accuracy, recovery

if TYPE_CHECKING:
    from edgeloop.sdk.control_client import ControlClient

# A dim camera: where the stage's first shift washed the image out (x0.5, +30 %), this one
# keeps it dark (x0.35, +5 %). Checked on a CNN retrained as the stage's job retrains it (on
# the first shift and the original split): 65 % on the test split with this shift (36 % for
# the champion) against 99.6 % with the first shift, so the challenger has it to learn.
NODE_SHIFT = Shift(
    gain=0.35, offset=0.05, name="node-1's own camera: dim (contrast x0.35, brightness +5 %)"
)
NODE_SAMPLES = 200  # labelled samples of the node's condition (the job's new data)
# The worker's step (1e-3) and a larger replay share than its 0.5, for 10 short epochs (150
# samples each): on the quickstart's challenger digits-cnn:2, 6 epochs at 3e-3 lost 2.60 pp on
# the original split (the node rejected the run); 10 at 1e-3 won 38 pp on the node's hold-out
# and lost nothing (-0.37 pp), in 5.9 s of training (docs/retraining.md, quickstart stage).
NODE_EPOCHS = 10
NODE_LR = 1e-3
NODE_REPLAY_SHARE = 0.75
REPLAY_SEED = 500  # field samples that start the node's replay buffer (its default size)
TIMEOUT_S = 300.0
RECOVER_GOAL = 0.80  # issue 13's on-device goal: >= 80 % of the lost accuracy back
DATA_NOTE = (
    "the new data's labels are the samples' own labels from the data set (its train and "
    "validation splits, shifted as the node's camera shifts them): they stand in for the "
    "node's own labelled data (its labelled captures)"
)
Array = np.ndarray[Any, Any]


def node_data(field: Dataset, shift: Shift, span: float, n: int, seed: int) -> tuple[Array, Array]:
    """``n`` samples of ``field`` (train and validation only) in a seeded order of their own
    (``seed + 2``: the stage's field stream uses ``seed + 1``), with ``shift``; their labels."""
    rng = np.random.default_rng(seed + 2)
    pick = rng.permutation(len(field))[: min(n, len(field))]
    x = np.asarray(field.x, dtype=np.float32)[pick]
    return shift.apply(x, span), np.asarray(field.y)[pick].astype(np.int64)


def node_shift(first: Shift) -> Shift:
    """:data:`NODE_SHIFT`, or a darker one when the stage's first shift is that very change
    (the node's condition must differ from what the central challenger was trained for)."""
    if (first.gain, first.offset) != (NODE_SHIFT.gain, NODE_SHIFT.offset):
        return NODE_SHIFT
    return Shift(NODE_SHIFT.gain, NODE_SHIFT.offset - 0.1, f"{NODE_SHIFT.name}, 10 % darker")


def replay_seed(field: Dataset, n: int, seed: int) -> tuple[Array, Array]:
    """A seeded uniform share of ``field`` as it is: the node's replay buffer starts with it."""
    pick = np.random.default_rng(seed + 3).permutation(len(field))[: min(n, len(field))]
    return np.asarray(field.x, np.float32)[pick], np.asarray(field.y)[pick].astype(np.int64)


def run_on_device(
    admin: ControlClient,
    client: Any,
    node: dict[str, str],
    field: Dataset,
    test: Dataset,
    *,
    first: Shift,
    span: float,
    seed: int,
) -> dict[str, Any]:
    """The step (module docstring) on ``node`` (``name``, ``node_id``); the report's
    ``retrain.on_device`` block. A refused, rejected or failed run is recorded, not raised.

    Raises:
        TransportError: the node's server did not answer a measurement request.
    """
    from edgeloop.pipeline.retrain_stage import _measure

    shift = node_shift(first)
    active = _active(client)
    ref = f"{active.get('name')}:{active.get('version')}"
    name = ref.rpartition(":")[0]
    before = _measure(client, name, test, shift, span)
    xs, ys = node_data(field, shift, span, NODE_SAMPLES, seed)
    options = {"threads": 1, "seed": seed, "lr": NODE_LR, "replay_share": NODE_REPLAY_SHARE}
    block = _plan(node, ref, field, shift, first, len(ys), options, seed)
    t = time.perf_counter()
    try:
        files = {
            "old_data": _put(admin, test.x, test.y, "old.npz"),
            "replay": _put(admin, *replay_seed(field, REPLAY_SEED, seed), "replay-seed.npz"),
        }
        job = _train(admin, node["node_id"], ref, _put(admin, xs, ys, "node-data.npz"), files,
                     options)  # fmt: skip
    except EdgeError as exc:  # refused at POST (e.g. a recipe a node cannot redo) or no answer
        block["job"] = refused(f"{type(exc).__name__}: {exc}")
    block["request_s"] = round(time.perf_counter() - t, 2)
    if "job" not in block:
        block["job"] = job_figures(job)
    after = _measure(client, name, test, shift, span)
    served = _active(client)
    block.update(
        accuracy_before=before.to_dict(),
        accuracy_after=after.to_dict(),
        served_after=served_block(served),
        recovery=node_recovery(before, after),
    )
    return block


def _plan(
    node: dict[str, str], ref: str, field: Dataset, shift: Shift, first: Shift, n: int,
    options: dict[str, Any], seed: int,
) -> dict[str, Any]:  # fmt: skip
    return {
        "node": node,
        "model": ref,
        "shift": shift.to_dict(),
        "first_shift": first.to_dict(),
        "data": {
            "samples": n,
            "drawn_from": f"{field.name} ({len(field)} samples: the champion's train and "
            f"validation splits; never its test split), seeded order (seed {seed + 2})",
            "labels_note": DATA_NOTE,
            "old_data": "the original test split (forgetting is checked on it)",
            "replay_seed": f"{min(REPLAY_SEED, len(field))} samples of {field.name} as they are",
        },
        "epochs": NODE_EPOCHS,
        "options": options,
    }


def _put(admin: ControlClient, x: Any, y: Any, name: str) -> str:
    from edgeloop.sdk.node_training import put_npz

    return put_npz(admin, x, y, name)


def _train(
    admin: ControlClient, node_id: str, ref: str, data: str, files: dict[str, str],
    options: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    from edgeloop.sdk import node_training as nt

    job = nt.start(admin, node_id, ref, NODE_EPOCHS, data, files=files, options=options)
    return nt.wait(admin, job, TIMEOUT_S)


def job_figures(job: dict[str, Any]) -> dict[str, Any]:
    """The node's own report of the run (:func:`edgeloop.sdk.node_training.summary`), its
    export process's wall time and peak RSS and, for a run that did not install, why."""
    from edgeloop.sdk.node_training import summary

    figures = summary(job)
    why = figures["reason"] or figures["error"] or figures["outcome"]
    result = job.get("result") or {}  # the export process of an accepted run (None: none ran)
    export = {k: result.get(k) for k in ("export_wall_s", "export_peak_rss_mb")}
    return {**figures, **export, "why_not_installed": None if figures["installed"] else why}


def refused(reason: str) -> dict[str, Any]:
    """The job block of a run that never trained: the node's figures None, with the reason."""
    none = dict.fromkeys(("job_id", "lineage", "accepted", "run_wall_s", "peak_rss_mb",
                          "export_wall_s", "export_peak_rss_mb"))  # fmt: skip
    return {**none, "state": "refused", "reason": reason, "installed": False,
            "why_not_installed": reason}  # fmt: skip


def _active(client: Any) -> dict[str, Any]:
    status = _ok(client.get("/agent/status"), "agent status")
    return dict(status.get("active") or {})


def served_block(active: dict[str, Any]) -> dict[str, Any]:
    """What the node reports it serves: version, node-local lineage (None for a shipped
    version), whether its server answers with it."""
    keys = ("name", "version", "variant", "lineage", "parent", "rebuilt", "serving")
    return {k: active.get(k) for k in keys}


def node_recovery(before: Accuracy, after: Accuracy) -> dict[str, Any]:
    """:func:`recovery` for the node's shift, against issue 13's on-device goal (>= 80 %)."""
    return recovery(before, after, recover_goal=RECOVER_GOAL)
