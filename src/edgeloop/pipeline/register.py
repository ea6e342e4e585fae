"""The register stage: publish a model with its manifest (data hash, recipe, parity, figures).

:func:`model_manifest` writes down everything the earlier stages measured about a model trained
here; :func:`register` publishes any file with any manifest (the retraining job registers its
candidate with a lineage parent the same way).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeloop.core.settings import Settings
from edgeloop.core.types import Manifest, Measurement, ModelRef
from edgeloop.data.dataset import Dataset
from edgeloop.formats.onnx_export import ExportResult

if TYPE_CHECKING:
    from edgeloop.training.result import TrainResult


@dataclass(frozen=True, slots=True)
class Registered:
    """The registry version a model was published as, and the manifest it carries."""

    ref: ModelRef
    manifest: Manifest

    def to_dict(self) -> dict[str, Any]:
        return {"registry": {"ref": str(self.ref)}}


def model_manifest(
    name: str,
    exported: ExportResult,
    trained: TrainResult,
    dataset: Dataset,
    measurements: tuple[Measurement, ...],
    *,
    split_seed: int,
) -> Manifest:
    """The manifest of an ONNX model exported from a module trained in this run."""
    import torch

    return Manifest(
        name=name,
        format="onnx",
        inputs=exported.info.inputs,
        outputs=exported.info.outputs,
        source_data_hash=dataset.content_hash,
        dataset=dataset.name,
        recipe={
            "arch": trained.arch.to_dict(),
            "fit": trained.config.to_dict(),
            "split_seed": split_seed,
        },
        parity=exported.parity,
        measurements=measurements,
        metrics=trained.test_metrics.to_dict_floats(),
        tools={"torch": torch.__version__, "exporter": exported.exporter, **_tool_versions()},
    )


def register(
    model: Path,
    manifest: Manifest,
    settings: Settings,
    *,
    reference: Dataset | None = None,
    held_out: Dataset | None = None,
) -> Registered:
    """Publish ``model`` under ``manifest.name`` as its next version; with ``reference`` (the
    training split) an ONNX model ships a reference profile for the node's drift monitor: the
    inputs from ``reference``, the model's outputs from ``held_out`` (the validation split;
    on its training rows a model is over-confident) when given, else from ``reference``.

    Raises:
        EdgeError: from the registry (an artifact that fails its checks, a store error) or
            from profiling the reference.
    """
    from edgeloop.registry import Registry
    from edgeloop.registry.profiles import profile_dataset

    profile = None
    if reference is not None and manifest.format == "onnx":
        profile = profile_dataset(model, reference, held_out)
    with Registry.open(settings) as registry:
        version = registry.publish(model, manifest, profile=profile)
    return Registered(ModelRef(version.name, version.version), version.manifest)


def _tool_versions() -> dict[str, str]:
    import onnx
    import onnxruntime

    return {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}
