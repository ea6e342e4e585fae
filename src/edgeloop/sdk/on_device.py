"""``OnDeviceTraining().incremental_train``: the on-device training library on a fleet model.

What runs: :func:`edgeloop.training.on_device.incremental_train` (fine-tuning with experience
replay, rejected when it forgets more than ``max_forgetting_pp`` points of the old data) on the
model's registered torch checkpoint and the new labelled samples given.

- ``node="NAME"``: on that node (:mod:`edgeloop.sdk.node_training`, control/train_api.py): the
  node's agent runs the training worker on the version it serves, installs an accepted result
  as a node-local version (``NAME:V+NODE.N``, through its updater's states) and reports the
  figures; ``new_data="captures"`` trains on the node's own labelled captures. The result's
  ``ref`` is that node-local lineage label (not a registry ref); nothing is registered.
- no ``node``: in this process (a workstation with torch), the checkpoint fetched from the
  control plane; an accepted run is registered as ``NAME-incremental`` with the parent as
  lineage parent and its new checkpoint.

Forgetting is measured on the test split of the data set the model's manifest names (on a node
too: the split is sent with the job, with a share of the training split to start the node's
replay buffer).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeloop.core.errors import ConfigError
from edgeloop.sdk.results import IncrementalResult

if TYPE_CHECKING:
    from edgeloop.sdk.manager import EdgeMLManager


def default_manager() -> EdgeMLManager:
    """The manager of the one saved site profile. Raises ConfigError for none or several."""
    from edgeloop.sdk.manager import EdgeMLManager
    from edgeloop.sdk.site import load_sites

    sites = load_sites()
    if len(sites) != 1:
        raise ConfigError(
            f"OnDeviceTraining() without a manager needs exactly one site profile; there are "
            f"{len(sites)} ({', '.join(sorted(sites)) or 'none'})",
            hint="pass the manager: OnDeviceTraining(EdgeMLManager('SITE'))",
        )
    return EdgeMLManager(next(iter(sites.values())))


def train(
    edge: EdgeMLManager, model_id: str, new_data: Any, epochs: int, **options: Any
) -> IncrementalResult:
    """Fine-tune ``model_id``'s registered checkpoint on ``new_data`` ((x, y) or a Dataset).

    Raises:
        ConfigError: no checkpoint or data set registered with the model; bad options.
        DataError: unlabelled or misshapen data (the library's checks).
    """
    from edgeloop.core.types import ModelRef
    from edgeloop.data import load_data, stratified_split
    from edgeloop.sdk.variants import publish_checkpointed, registered_checkpoint, registered_data
    from edgeloop.training.on_device import IncrementalConfig, incremental_train

    captures = isinstance(new_data, str) and new_data == "captures"
    if not captures and not isinstance(new_data, tuple) and not hasattr(new_data, "y"):
        raise ConfigError(
            f"incremental_train({model_id!r}): new_data must carry labels: (x, y) arrays or a "
            f"Dataset, not {type(new_data).__name__}",
            hint="label the samples first (`edgeloop data label`), then pass (x, y)",
        )
    row = edge._model_row(ModelRef.parse(model_id))
    if options.get("node") is not None:
        return on_node(edge, row, str(options.pop("node")), new_data, epochs, options)
    options.pop("node", None)
    stored = registered_checkpoint(row, f"incremental_train({row['ref']!r})")
    dataset = load_data(registered_data(row, f"incremental_train({row['ref']!r})"))
    old = stratified_split(dataset, val=0.15, test=0.15, seed=0).test
    config = IncrementalConfig(epochs=epochs, **options)
    with tempfile.TemporaryDirectory(prefix="edgeloop-incremental-") as work:
        ckpt = edge.control.get_checkpoint(stored, Path(work) / "parent.ckpt")
        out, parent = Path(work) / "out", str(row["ref"])
        result = incremental_train(ckpt, new_data, config, out=out, old_data=old,
                                   parent_ref=parent, node_id="sdk")  # fmt: skip
        ref = None
        if result.accepted and result.output is not None and result.onnx is not None:
            record = publish_checkpointed(edge.control, row, Path(result.onnx),
                                           Path(result.output), dataset,
                                           f"{row['name']}-incremental")  # fmt: skip
            ref = str(record["ref"])
    return IncrementalResult(
        accuracy_before=result.accuracy_before,
        accuracy_after=result.accuracy_after,
        old_accuracy_before=result.old_accuracy_before,
        old_accuracy_after=result.old_accuracy_after,
        forgetting_pp=result.forgetting_pp,
        accepted=result.accepted,
        reason=result.reason,
        ref=ref,
        parent=str(row["ref"]),
        new_train_samples=result.new_train_samples,
        new_holdout_samples=result.new_holdout_samples,
        epochs_run=result.epochs_run,
        wall_seconds=result.wall_seconds,
        ran_on="this machine (no node named: the library ran in this process)",
    )


def on_node(
    edge: EdgeMLManager,
    row: dict[str, Any],
    node: str,
    new_data: Any,
    epochs: int,
    options: dict[str, Any],
) -> IncrementalResult:
    """The run on ``node`` (module doc). Raises what :func:`node_training.raise_failed` does."""
    from edgeloop.sdk import node_training as nt

    timeout_s = float(options.pop("timeout_s", 600.0))
    if "train_last_layers" in options:  # IncrementalConfig's name -> the job's option
        options["last_layers"] = options.pop("train_last_layers")
    control = edge.control
    data = "captures"
    if not (isinstance(new_data, str) and new_data == "captures"):
        x, y = (new_data.x, new_data.y) if hasattr(new_data, "y") else new_data
        data = nt.put_npz(control, x, y, "new.npz")
    files = nt.reference_data(control, row)
    job = nt.start(control, node, str(row["ref"]), epochs, data, files=files, options=options)
    job = nt.wait(control, job, timeout_s)
    nt.raise_failed(job)
    r = job["result"]
    return IncrementalResult(
        accuracy_before=r["new_accuracy_before"],
        accuracy_after=r["new_accuracy_after"],
        old_accuracy_before=r["old_accuracy_before"],
        old_accuracy_after=r["old_accuracy_after"],
        forgetting_pp=r["forgetting_pp"],
        accepted=bool(r["accepted"]) and bool(r["installed"]),
        reason=f"{r['reason']}; {r['outcome']}",
        ref=r["lineage"] if r["installed"] else None,
        parent=str(row["ref"]),
        new_train_samples=r["new_train_samples"],
        new_holdout_samples=r["new_holdout_samples"],
        epochs_run=r["epochs_run"],
        wall_seconds=r["worker_wall_s"],
        ran_on=f"node {node} (its agent's training worker; peak RSS {r['peak_rss_mb']} MiB)",
    )
