"""``quantize_model`` / ``prune_model``: the real optimize methods on a fleet's model.

The same code ``edgeloop optimize`` runs: the artifact is downloaded from the control plane
(its sha256 checked), the method is fitted on the model's registered data set (the training
split of the same stratified split), both files are benchmarked here on the test split, and the
variant is published on the control plane with the parent as its lineage parent and its own
measurement in its manifest.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from edgeloop.core.errors import ConfigError
from edgeloop.sdk.control_client import ControlClient
from edgeloop.sdk.results import PruneResult, QuantizeResult

# precision -> the optimize method (`edgeloop optimize --list`). INT8 is calibrated on the
# registered data (static) since static INT8 is what speeds up convolutions on CPUs.
PRECISIONS = {"int8": "static-int8", "dynamic-int8": "dynamic-int8", "fp16": "fp16"}
# Structured pruning: channels leave the tensors, so the file shrinks and CPUs run it faster
# (zeroed weights in dense kernels, prune-unstructured, save no time on a CPU).
PRUNE_METHOD = "prune-structured"
MB = 1024.0 * 1024.0


def quantize(
    control: ControlClient,
    row: dict[str, Any],
    precision: str,
    *,
    data: str | None = None,
    runs: int = 200,
    seed: int = 0,
) -> QuantizeResult:
    """Quantize the model of ``row`` (a ``/api/v1/models`` row) to ``precision``.

    ``data`` overrides the data set the manifest names (a bundled name or a path).

    Raises:
        ConfigError: an unknown precision, or no data set registered and none given.
        The optimize method's errors (ConversionError, ParityError, ...).
    """
    from edgeloop.bench.measure import benchmark
    from edgeloop.data import load_data, stratified_split
    from edgeloop.formats.onnx_info import check_samples_fit, inspect_onnx
    from edgeloop.optimize.base import ModelSource, create

    if precision not in PRECISIONS:
        raise ConfigError(
            f"precision {precision!r} is not known; expected one of {', '.join(PRECISIONS)}"
        )
    method = PRECISIONS[precision]
    data_name = data or registered_data(row, f"quantize_model({row['ref']!r})")
    dataset = load_data(data_name)
    splits = stratified_split(dataset, val=0.15, test=0.15, seed=seed)
    with tempfile.TemporaryDirectory(prefix="edgeloop-quantize-") as work:
        parent = control.download_artifact(row, Path(work) / f"{row['name']}.onnx")
        check_samples_fit(inspect_onnx(parent), dataset.sample_shape, data_name)
        optimizer = create(method)
        optimizer.fit(splits)
        variant = optimizer.apply(ModelSource(parent, None, str(row["name"])),
                                  Path(work) / f"{row['name']}-{precision}.onnx")  # fmt: skip
        split = f"{splits.test.name} test ({len(splits.test)} samples)"
        before, after = (
            benchmark(p, runs=runs, data=splits.test, split_name=split, isolate=True)
            for p in (parent, variant.path)
        )
        record = _publish(control, row, variant, after, dataset, f"{row['name']}-{precision}")
    return QuantizeResult(
        ref=str(record["ref"]),
        parent=str(row["ref"]),
        method=method,
        original_size_mb=before.size_bytes / MB,
        quantized_size_mb=after.size_bytes / MB,
        speedup=before.latency_ms.p50 / after.latency_ms.p50,
        original_latency_ms=before.latency_ms.p50,
        quantized_latency_ms=after.latency_ms.p50,
        original_accuracy=before.accuracy,
        quantized_accuracy=after.accuracy,
        measured_on=f"{after.cpu}, {after.threads} threads, {split}, {runs} runs",
    )


def prune(
    control: ControlClient,
    row: dict[str, Any],
    sparsity: float,
    *,
    data: str | None = None,
    epochs: int = 3,
    runs: int = 200,
    seed: int = 0,
) -> PruneResult:
    """Remove ``sparsity`` of the channels of every layer but the output one (Torch-Pruning's
    dependency graph, ``prune-structured``), fine-tune for at most ``epochs`` epochs, and
    register the variant (its pruned checkpoint stored beside it) with ``row`` as parent.

    Parameters are Torch-Pruning's counts of the torch module before and after; sizes are the
    ONNX files'; the speed-up is the parent's p50 over the variant's, both run here.

    Raises:
        ConfigError: a sparsity outside (0, 1); no data set registered and none given; no
            checkpoint registered with the model (the message says how to publish one).
        The optimize method's errors (ConversionError, ParityError, ...).
    """
    from edgeloop.bench.measure import benchmark
    from edgeloop.data import load_data, stratified_split
    from edgeloop.optimize.base import ModelSource, create

    if not 0.0 < sparsity < 1.0:
        raise ConfigError(f"sparsity {sparsity!r} is outside (0, 1); e.g. 0.3 removes 30 %")
    stored = registered_checkpoint(row)
    data_name = data or registered_data(row, f"prune_model({row['ref']!r})")
    dataset = load_data(data_name)
    splits = stratified_split(dataset, val=0.15, test=0.15, seed=seed)
    with tempfile.TemporaryDirectory(prefix="edgeloop-prune-") as work:
        parent = control.download_artifact(row, Path(work) / f"{row['name']}.onnx")
        ckpt = control.get_checkpoint(stored, Path(work) / "parent.ckpt")
        optimizer = create(PRUNE_METHOD, ratio=sparsity, epochs=epochs, seed=seed)
        optimizer.fit(splits)
        variant = optimizer.apply(ModelSource(parent, ckpt, str(row["name"])),
                                  Path(work) / f"{row['name']}-pruned.onnx")  # fmt: skip
        split = f"{splits.test.name} test ({len(splits.test)} samples)"
        before, after = (
            benchmark(p, runs=runs, data=splits.test, split_name=split, isolate=True)
            for p in (parent, variant.path)
        )
        kept = None if variant.checkpoint is None else control.put_checkpoint(variant.checkpoint)
        record = _publish(control, row, variant, after, dataset, f"{row['name']}-pruned",
                          checkpoint=kept)  # fmt: skip
    extra = variant.extra
    return PruneResult(
        ref=str(record["ref"]),
        parent=str(row["ref"]),
        method=PRUNE_METHOD,
        sparsity=sparsity,
        original_parameters=int(extra["parameters_before"]),
        pruned_parameters=int(extra["parameters_after"]),
        original_macs=int(extra["macs_before"]),
        pruned_macs=int(extra["macs_after"]),
        original_size_mb=before.size_bytes / MB,
        pruned_size_mb=after.size_bytes / MB,
        speedup=before.latency_ms.p50 / after.latency_ms.p50,
        original_latency_ms=before.latency_ms.p50,
        pruned_latency_ms=after.latency_ms.p50,
        original_accuracy=before.accuracy,
        pruned_accuracy=after.accuracy,
        measured_on=f"{after.cpu}, {after.threads} threads, {split}, {runs} runs",
    )


def registered_checkpoint(row: dict[str, Any], what: str | None = None) -> dict[str, str]:
    """The sha256s of the torch checkpoint the model's manifest names (``recipe.checkpoint``).

    Raises:
        ConfigError: none is named (the message says how to publish the model with one).
    """
    recipe = (row.get("manifest") or {}).get("recipe") or {}
    found = recipe.get("checkpoint")
    if isinstance(found, dict) and {"weights", "config"} <= set(found):
        return {"weights": str(found["weights"]), "config": str(found["config"])}
    label = what or f"prune_model({row['ref']!r})"
    raise ConfigError(
        f"{label}: the model has no torch "
        "checkpoint registered (its manifest names no recipe.checkpoint); pruning and "
        "incremental training change the torch weights, and an ONNX file (batch norms folded) "
        "cannot give them back",
        hint="publish the model with the folder `edgeloop train --out DIR` wrote: `edgeloop "
        "fleet publish MODEL.onnx --name NAME --checkpoint DIR`, or "
        "ControlClient.publish_model(file, manifest, checkpoint=DIR)",
    )


def registered_data(row: dict[str, Any], what: str) -> str:
    manifest = row.get("manifest")
    name = None if manifest is None else manifest.get("dataset")
    if name:
        return str(name)
    why = ("the control plane lists no manifest for it" if manifest is None
           else "its manifest names no data set")  # fmt: skip
    raise ConfigError(
        f"{what}: no data set is registered for the model ({why}); calibration and accuracy "
        "need the model's data",
        hint="pass data='digits' (a bundled name or a path), or publish the model with "
        "Manifest(dataset=...)",
    )


def _publish(
    control: ControlClient,
    row: dict[str, Any],
    variant: Any,
    measured: Any,
    dataset: Any,
    name: str,
    *,
    checkpoint: dict[str, str] | None = None,
) -> dict[str, Any]:
    from edgeloop.core.types import Manifest, ModelRef
    from edgeloop.formats.onnx_info import inspect_onnx

    info = inspect_onnx(variant.path)
    manifest = Manifest(
        name=name,
        format="onnx",
        inputs=info.inputs,
        outputs=info.outputs,
        source_data_hash=dataset.content_hash,
        dataset=dataset.name,
        recipe={
            "optimize": {"method": variant.method, "settings": dict(variant.settings)},
            **({} if checkpoint is None else {"checkpoint": checkpoint}),
        },
        parity=variant.parity,
        measurements=(measured,),
        tools=dict(variant.tools),
        parent=ModelRef.parse(str(row["ref"])),
    )
    return control.publish_model(variant.path, manifest)


def publish_checkpointed(
    control: ControlClient,
    row: dict[str, Any],
    onnx: Path,
    checkpoint: Path,
    dataset: Any,
    name: str,
) -> dict[str, Any]:
    """Register ``onnx`` as ``name`` with ``row`` as parent and its checkpoint stored."""
    from edgeloop.core.types import Manifest, ModelRef
    from edgeloop.formats.onnx_info import inspect_onnx

    info = inspect_onnx(onnx)
    manifest = Manifest(
        name=name,
        format="onnx",
        inputs=info.inputs,
        outputs=info.outputs,
        source_data_hash=dataset.content_hash,
        dataset=dataset.name,
        recipe={"on_device": "incremental (edgeloop.training.on_device)"},
        parent=ModelRef.parse(str(row["ref"])),
    )
    return control.publish_model(onnx, manifest, checkpoint=checkpoint)
