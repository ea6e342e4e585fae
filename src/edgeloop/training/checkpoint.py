"""Torch checkpoints as two plain files: weights and the config that rebuilds the module.

A checkpoint folder holds ``model.pt`` (``torch.save(module.state_dict())``: tensors only, no
pickled module) and ``model.json`` (architecture config, fit config, metrics, data set and
torch version, and the sha256 of ``model.pt``). Loading uses ``torch.load(weights_only=True)``
so a file carrying pickled code is refused, and the recorded sha256 catches a corrupt or
swapped weights file before it is parsed.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgeloop.core.errors import ConfigError, NotFoundError, UntrustedArtifactError
from edgeloop.core.files import write_atomic
from edgeloop.data.dataset import Dataset
from edgeloop.training.fit import FitConfig
from edgeloop.training.metrics import Metrics
from edgeloop.training.zoo import ArchConfig, build

WEIGHTS = "model.pt"
CONFIG = "model.json"
FORMAT = "edgeloop-torch-checkpoint"
FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class CheckpointInfo:
    """What ``model.json`` says about a checkpoint (no weights loaded)."""

    arch: ArchConfig
    fit: FitConfig | None
    metrics: Metrics | None
    classes: tuple[str, ...]
    dataset: str | None
    dataset_hash: str | None
    torch_version: str
    weights_sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "arch": self.arch.to_dict(),
            "fit": None if self.fit is None else self.fit.to_dict(),
            "metrics": None if self.metrics is None else self.metrics.to_dict(),
            "classes": list(self.classes),
            "dataset": self.dataset,
            "dataset_hash": self.dataset_hash,
            "torch_version": self.torch_version,
            "weights": WEIGHTS,
            "weights_sha256": self.weights_sha256,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CheckpointInfo:
        """Raises ConfigError for a bad arch / fit / metrics entry, KeyError for a missing key."""
        fit, metrics = d.get("fit"), d.get("metrics")
        return cls(
            arch=ArchConfig.from_dict(d["arch"]),
            fit=None if fit is None else FitConfig.from_dict(fit),
            metrics=None if metrics is None else Metrics.from_dict(metrics),
            classes=tuple(str(c) for c in d.get("classes") or ()),
            dataset=d.get("dataset"),
            dataset_hash=d.get("dataset_hash"),
            torch_version=str(d["torch_version"]),
            weights_sha256=str(d["weights_sha256"]),
        )


def _check_matches(module: nn.Module, arch: ArchConfig) -> dict[str, torch.Tensor]:
    state = module.state_dict()
    try:
        build(arch).load_state_dict(state)
    except RuntimeError as exc:
        raise ConfigError(
            f"{type(module).__name__} does not match arch config {arch.to_dict()}: {exc}",
            hint="save the module fit() returned (not deployable(...)) with its ArchConfig",
        ) from exc
    return state


def save_checkpoint(
    directory: str | Path,
    module: nn.Module,
    arch: ArchConfig,
    fit: FitConfig | None,
    metrics: Metrics | None,
    *,
    dataset: Dataset | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model.pt`` + ``model.json`` into ``directory`` (created); returns the folder.

    ``model.json`` is written last, so a folder with a readable ``model.json`` always has the
    weights it describes. ``extra`` keys are added to ``model.json`` (``edgeloop train``
    records its ``--data`` there, so ``export`` checks parity on the same data).

    Raises:
        ConfigError: ``module``'s weights do not fit ``arch``, or the folder cannot be written.
    """
    return write_checkpoint(
        directory, _check_matches(module, arch), arch, fit, metrics, dataset=dataset, extra=extra
    )


@dataclass(frozen=True, slots=True)
class RecordedData:
    """The ``--data`` a checkpoint was trained on (a bundled name or an absolute path), the
    loader options it was read with and whether it was cleaned, as ``edgeloop train`` wrote."""

    spec: str
    options: dict[str, Any]
    cleaned: bool


def recorded_data(path: str | Path) -> RecordedData | None:
    """The data a checkpoint records, or None when it records none (older checkpoints, the SDK).

    Raises:
        NotFoundError, UntrustedArtifactError, ConfigError: as :func:`read_checkpoint`.
    """
    read_checkpoint(path)  # the file exists and is a checkpoint config
    config = json.loads((_folder(path) / CONFIG).read_text())
    data, options = config.get("data"), config.get("data_options")
    if not isinstance(data, str) or not data:
        return None
    return RecordedData(
        data, options if isinstance(options, dict) else {}, bool(config.get("clean", False))
    )


def write_checkpoint(
    directory: str | Path,
    state: Mapping[str, torch.Tensor],
    arch: ArchConfig,
    fit: FitConfig | None,
    metrics: Metrics | None,
    *,
    dataset: Dataset | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``state`` and its config (plus ``extra`` config keys) without checking ``arch``.

    For callers that record how to rebuild a module ``arch`` alone does not describe (pruned
    widths); :func:`save_checkpoint` is the checked entry point. ``model.json`` is written last.

    Raises:
        ConfigError: the folder cannot be written.
    """
    folder = Path(directory)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        buf = _serialize(state)
        write_atomic(folder / WEIGHTS, buf)
        info = CheckpointInfo(
            arch=arch,
            fit=fit,
            metrics=metrics,
            classes=() if dataset is None else dataset.classes,
            dataset=None if dataset is None else dataset.name,
            dataset_hash=None if dataset is None else dataset.content_hash,
            torch_version=torch.__version__,
            weights_sha256=hashlib.sha256(buf).hexdigest(),
        )
        config = {**info.to_dict(), **(extra or {})}
        write_atomic(folder / CONFIG, json.dumps(config, indent=2).encode())
    except OSError as exc:
        raise ConfigError(
            f"cannot write checkpoint to {str(folder)!r}: {exc.strerror or exc}",
            hint="pass --out a writable folder",
        ) from exc
    return folder


def _serialize(state: Mapping[str, torch.Tensor]) -> bytes:
    buf = io.BytesIO()
    torch.save(dict(state), buf)
    return buf.getvalue()


def _folder(path: str | Path) -> Path:
    p = Path(path)
    return p.parent if p.name in (WEIGHTS, CONFIG) and not p.is_dir() else p


def read_checkpoint(path: str | Path) -> CheckpointInfo:
    """Read ``model.json`` of the checkpoint folder ``path`` (or of its model.pt/json file).

    Raises:
        NotFoundError: no ``model.json`` there.
        UntrustedArtifactError: ``model.json`` is not a checkpoint config (bad JSON, format).
        ConfigError: its arch / fit / metrics entries are not valid.
    """
    file = _folder(path) / CONFIG
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise NotFoundError(
            f"no checkpoint config {str(file)!r}",
            hint="pass the folder `edgeloop train --out DIR` wrote",
        ) from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UntrustedArtifactError(
            f"checkpoint config {str(file)!r} is not readable JSON: {exc}",
            hint="the file is corrupt; train again or restore the folder",
        ) from exc
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise UntrustedArtifactError(
            f"{str(file)!r} is not an edgeloop checkpoint config (expected format {FORMAT!r})",
            hint="pass the folder `edgeloop train --out DIR` wrote",
        )
    try:
        return CheckpointInfo.from_dict(raw)
    except ConfigError as exc:
        raise ConfigError(f"checkpoint config {str(file)!r}: {exc.message}", hint=exc.hint) from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise UntrustedArtifactError(
            f"checkpoint config {str(file)!r} lacks or mangles {exc}",
            hint="the file is corrupt; train again or restore the folder",
        ) from exc


def read_weights(file: Path, sha256: str) -> dict[str, torch.Tensor]:
    """Load a state_dict whose sha256 is known, refusing anything but plain tensors."""
    try:
        data = file.read_bytes()
    except FileNotFoundError as exc:
        raise NotFoundError(f"checkpoint weights {str(file)!r} are missing") from exc
    if hashlib.sha256(data).hexdigest() != sha256:
        raise UntrustedArtifactError(
            f"checkpoint weights {str(file)!r} do not match the sha256 in {CONFIG}",
            hint="the file is corrupt or was replaced; train again or restore the folder",
        )
    try:
        # weights_only: tensors and plain containers only; pickled code is refused.
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types for hostile or broken bytes
        raise UntrustedArtifactError(
            f"checkpoint weights {str(file)!r} cannot be loaded as a plain state_dict: {exc}",
            hint="only files written by save_checkpoint / `edgeloop train` are accepted",
        ) from exc
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise UntrustedArtifactError(f"checkpoint weights {str(file)!r} are not a state_dict")
    return state


def load_checkpoint(path: str | Path) -> tuple[nn.Module, ArchConfig]:
    """Rebuild the module saved in checkpoint folder ``path``; returned in eval mode.

    Raises:
        NotFoundError: ``model.json`` or ``model.pt`` is missing.
        UntrustedArtifactError: a file is corrupt, was swapped, or holds more than tensors.
        ConfigError: the config is invalid or does not match the weights' names and shapes.
    """
    folder = _folder(path)
    info = read_checkpoint(folder)
    state = read_weights(folder / WEIGHTS, info.weights_sha256)
    module = build(info.arch)
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise ConfigError(
            f"checkpoint weights {str(folder / WEIGHTS)!r} do not match the arch config in "
            f"{str(folder / CONFIG)!r}: {exc}",
            hint="the config and weights come from different models; train again",
        ) from exc
    return module.eval(), info.arch
