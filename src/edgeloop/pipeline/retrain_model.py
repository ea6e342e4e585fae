"""The retraining job's model steps: find the champion's weights, train the challenger, export.

Training follows the parent's recipe (its architecture config and fit config from the manifest;
``epochs`` may be overridden). A warm start needs the champion's torch checkpoint: the one a
retraining job stored with the version it registered (``recipe.checkpoint``, two content-
addressed artifacts), or a folder given with the job (``--checkpoint``: what ``edgeloop train
--out`` or the quickstart's ``checkpoint/`` holds). ONNX artifacts carry folded batch norms, so
torch weights cannot be read back from them.
"""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeloop.core.errors import ConfigError
from edgeloop.core.types import Manifest
from edgeloop.data.dataset import Splits
from edgeloop.registry.artifacts import ArtifactStore

if TYPE_CHECKING:
    from edgeloop.training.result import TrainResult
    from edgeloop.training.zoo import ArchConfig

WEIGHTS, CONFIG = "model.pt", "model.json"


@dataclass(frozen=True)
class Challenger:
    """The trained challenger: its result, checkpoint folder and ONNX export."""

    trained: TrainResult
    checkpoint: Path
    onnx: Path
    export: Any  # edgeloop.formats.onnx_export.ExportResult (torch-free import here)
    init: str

    def to_dict(self) -> dict[str, Any]:
        r = self.trained
        return {
            "init": self.init,
            "arch": r.arch.to_dict(),
            "fit": r.config.to_dict(),
            "epochs_run": r.epochs_run,
            "best_epoch": r.best_epoch,
            "stopped_early": r.stopped_early,
            "train_seconds": r.train_seconds,
            "train_samples": r.train_samples,
            "parity": self.export.parity.to_dict(),
        }


def stored_checkpoint(manifest: Manifest) -> dict[str, str] | None:
    """The checkpoint a retraining job stored with this version (sha256s), or None."""
    found = manifest.recipe.get("checkpoint")
    if isinstance(found, dict) and {"weights", "config"} <= set(found):
        return {"weights": str(found["weights"]), "config": str(found["config"])}
    return None


def warm_start_source(manifest: Manifest, given: str | None, name: str) -> str:
    """Where the champion's weights come from ('given' or 'stored'); ConfigError if nowhere."""
    if given is not None:
        if not (Path(given) / CONFIG).is_file():
            raise ConfigError(
                f"checkpoint folder {given!r} has no {CONFIG}",
                hint="give the folder `edgeloop train --out` (or the quickstart's checkpoint/) "
                "wrote",
            )
        return "given"
    if stored_checkpoint(manifest) is not None:
        return "stored"
    raise ConfigError(
        f"{name} has no torch checkpoint in the registry to warm-start from (it was not "
        "registered by a retraining job)",
        hint="pass --checkpoint DIR (the folder `edgeloop train --out` or the quickstart's "
        "checkpoint/ holds), or train from scratch with --from-scratch",
    )


def fetch_checkpoint(manifest: Manifest, artifacts: ArtifactStore, folder: Path) -> Path:
    """Copy the stored checkpoint's two files into ``folder`` (verified by their sha256)."""
    record = stored_checkpoint(manifest)
    if record is None:
        raise ConfigError(f"{manifest.name} lists no stored checkpoint")
    folder.mkdir(parents=True, exist_ok=True)
    for key, filename in (("weights", WEIGHTS), ("config", CONFIG)):
        artifacts.verify(record[key])
        shutil.copyfile(artifacts.path(record[key]), folder / filename)
    return folder


def store_checkpoint(folder: Path, artifacts: ArtifactStore) -> dict[str, str]:
    """Put the checkpoint's two files in the artifact store; their sha256s for the manifest."""
    return {
        "weights": artifacts.put(folder / WEIGHTS).sha256,
        "config": artifacts.put(folder / CONFIG).sha256,
    }


def parent_arch(manifest: Manifest, like: Splits) -> ArchConfig:
    """The parent's architecture config (its recipe), checked against the data."""
    from edgeloop.training.zoo import ArchConfig

    arch = manifest.recipe.get("arch")
    if not isinstance(arch, dict):
        raise ConfigError(
            f"{manifest.name}'s manifest records no architecture (recipe.arch), so it cannot "
            "be trained again",
            hint="retrain a model trained by edgeloop (quickstart, `edgeloop train`, a job)",
        )
    config = ArchConfig.from_dict(arch)
    train = like.train
    if config.input_shape != train.sample_shape or config.num_classes != train.num_classes:
        raise ConfigError(
            f"{manifest.name} is {config.arch} for input {config.input_shape} with "
            f"{config.num_classes} classes; the data has {train.sample_shape} and "
            f"{train.num_classes}",
        )
    return config


def train_challenger(
    manifest: Manifest,
    mix: Splits,
    work: Path,
    *,
    warm: Path | None,
    epochs: int | None,
    seed: int,
) -> Challenger:
    """Train (from ``warm``, a checkpoint folder, or from scratch) on ``mix`` with the parent's
    recipe; save the checkpoint and export the ONNX file (parity-checked) into ``work``.

    Raises:
        ConfigError: the warm-start checkpoint is another architecture, shape or classes.
        ConversionError / ParityError: the export failed.
    """
    from edgeloop.pipeline.export import export
    from edgeloop.training.checkpoint import load_checkpoint, save_checkpoint
    from edgeloop.training.fit import FitConfig, fit

    arch = parent_arch(manifest, mix)
    recorded = manifest.recipe.get("fit")
    fit_cfg = FitConfig.from_dict(recorded) if isinstance(recorded, dict) else FitConfig()
    fit_cfg = dataclasses.replace(fit_cfg, seed=seed, epochs=epochs or fit_cfg.epochs)
    module = None
    if warm is not None:
        module, have = load_checkpoint(warm)
        if (have.arch, have.input_shape, have.num_classes) != (
            arch.arch,
            arch.input_shape,
            arch.num_classes,
        ):
            raise ConfigError(
                f"warm-start checkpoint {warm} is {have.arch} for input {have.input_shape} with "
                f"{have.num_classes} classes; {manifest.name} is {arch.arch} for "
                f"{arch.input_shape} with {arch.num_classes}",
                hint="give the checkpoint of this very model, or --from-scratch",
            )
        arch = have
    result = fit(arch, mix, fit_cfg, progress=False, module=module)
    checkpoint = save_checkpoint(
        work / "checkpoint", result.module, result.arch, fit_cfg, result.test_metrics,
        dataset=mix.train,
    )  # fmt: skip
    test = mix.test
    exported = export(
        result.module, result.arch, test.x, work / "challenger.onnx", split=f"{test.name} test"
    )
    init = "scratch" if warm is None else "champion"
    return Challenger(result, checkpoint, exported.onnx, exported.result, init)
