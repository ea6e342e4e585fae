"""``OnDeviceTraining().incremental_train``: the on-device training library on a fleet model.

What runs: :func:`edgeloop.training.on_device.incremental_train` (fine-tuning with experience
replay, rejected when it forgets more than ``max_forgetting_pp`` points of the old data) on the
model's registered torch checkpoint, fetched from the control plane, and the new labelled
samples given. It runs in this process, not on a node: the node-side path (the agent training
on its own captured and labelled samples, issue 13 part 5) is not built. Forgetting is measured
on the test split of the data set the model's manifest names. An accepted run is registered as
``NAME-incremental`` with the parent as lineage parent and its new checkpoint.
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

    if not isinstance(new_data, tuple) and not hasattr(new_data, "y"):
        raise ConfigError(
            f"incremental_train({model_id!r}): new_data must carry labels: (x, y) arrays or a "
            f"Dataset, not {type(new_data).__name__}",
            hint="label the samples first (`edgeloop data label`), then pass (x, y)",
        )
    row = edge._model_row(ModelRef.parse(model_id))
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
        ran_on="this machine (the node-side training path is not built)",
    )
