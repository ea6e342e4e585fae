"""Checkpoints of modules whose layer widths no longer match their ArchConfig.

Structured pruning removes channels, so ``build(arch)`` no longer rebuilds the module. Instead
of pickling the module (checkpoints hold tensors only, by project rule), the folder keeps the
usual ``model.pt`` (a plain state_dict) and ``model.json`` (the usual checkpoint config) plus a
``layers`` entry: the name, kind and in / out widths (and groups) of every convolution, dense and
BatchNorm layer. Loading builds the arch, swaps each listed layer for one of the recorded width,
then loads the weights strictly -- so a wrong shape is refused, never silently reshaped.

A module that still matches its arch is saved and loaded by :mod:`edgeloop.training.checkpoint`
unchanged; :func:`load_module` reads both kinds of folder.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from torch import nn

from edgeloop.core.errors import ConfigError, UntrustedArtifactError
from edgeloop.data.dataset import Dataset
from edgeloop.training.checkpoint import (
    CONFIG,
    WEIGHTS,
    load_checkpoint,
    read_checkpoint,
    read_weights,
    save_checkpoint,
    write_checkpoint,
)
from edgeloop.training.fit import FitConfig
from edgeloop.training.metrics import Metrics
from edgeloop.training.zoo import ArchConfig, build

LAYERS_KEY = "layers"


class LayerKind(StrEnum):
    CONV1D = "conv1d"
    CONV2D = "conv2d"
    LINEAR = "linear"
    BATCHNORM1D = "batchnorm1d"
    BATCHNORM2D = "batchnorm2d"


_KINDS: dict[type[nn.Module], LayerKind] = {
    nn.Conv1d: LayerKind.CONV1D,
    nn.Conv2d: LayerKind.CONV2D,
    nn.Linear: LayerKind.LINEAR,
    nn.BatchNorm1d: LayerKind.BATCHNORM1D,
    nn.BatchNorm2d: LayerKind.BATCHNORM2D,
}


@dataclass(frozen=True, slots=True)
class LayerShape:
    """The widths of one layer: channels / features in and out, and conv groups.

    Raises:
        ConfigError: a width or groups count below 1.
    """

    name: str
    kind: LayerKind
    inputs: int
    outputs: int
    groups: int = 1

    def __post_init__(self) -> None:
        if min(self.inputs, self.outputs, self.groups) < 1:
            raise ConfigError(
                f"layer {self.name!r}: inputs={self.inputs}, outputs={self.outputs}, "
                f"groups={self.groups}; each must be >= 1"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind.value,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "groups": self.groups,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LayerShape:
        """Raises ConfigError for missing keys or bad values."""
        try:
            return cls(
                str(d["name"]),
                LayerKind(d["kind"]),
                int(d["inputs"]),
                int(d["outputs"]),
                int(d.get("groups", 1)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"layer shape {dict(d)!r} is not valid: {exc!r}") from exc


def _shape(name: str, m: nn.Module) -> LayerShape | None:
    kind = _KINDS.get(type(m))  # exact types: a subclass may build differently
    if kind is None:
        return None
    if isinstance(m, (nn.Conv1d, nn.Conv2d)):
        return LayerShape(name, kind, m.in_channels, m.out_channels, m.groups)
    if isinstance(m, nn.Linear):
        return LayerShape(name, kind, m.in_features, m.out_features)
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return LayerShape(name, kind, m.num_features, m.num_features)
    return None


def layer_shapes(module: nn.Module) -> tuple[LayerShape, ...]:
    """The widths of every convolution, dense and BatchNorm layer of ``module``, in order."""
    found = (_shape(name, m) for name, m in module.named_modules())
    return tuple(s for s in found if s is not None)


def matches_arch(module: nn.Module, arch: ArchConfig) -> bool:
    """Whether ``build(arch)`` has the same layer widths as ``module``."""
    return layer_shapes(module) == layer_shapes(build(arch))


def _resized(old: nn.Module, s: LayerShape) -> nn.Module:
    if isinstance(old, (nn.Conv1d, nn.Conv2d)):
        return type(old)(
            s.inputs,
            s.outputs,
            old.kernel_size,  # type: ignore[arg-type]
            stride=old.stride,  # type: ignore[arg-type]
            padding=old.padding,  # type: ignore[arg-type]
            dilation=old.dilation,  # type: ignore[arg-type]
            groups=s.groups,
            bias=old.bias is not None,
            padding_mode=old.padding_mode,
        )
    if isinstance(old, nn.Linear):
        return nn.Linear(s.inputs, s.outputs, bias=old.bias is not None)
    if isinstance(old, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return type(old)(s.outputs, eps=old.eps, momentum=old.momentum, affine=old.affine)
    raise ConfigError(f"layer {s.name!r} is a {type(old).__name__}; cannot resize it")


def rebuild(arch: ArchConfig, shapes: tuple[LayerShape, ...]) -> nn.Module:
    """``build(arch)`` with each layer in ``shapes`` swapped for one of the recorded widths.

    Raises:
        ConfigError: a recorded layer that ``arch`` does not have, or of another kind.
    """
    module = build(arch)
    for s in shapes:
        try:
            old = module.get_submodule(s.name)
        except AttributeError as exc:
            raise ConfigError(
                f"arch {arch.arch!r} has no layer {s.name!r} recorded in the checkpoint",
                hint="the layers list comes from another architecture; prune again",
            ) from exc
        if _KINDS.get(type(old)) is not s.kind:
            raise ConfigError(
                f"layer {s.name!r} of arch {arch.arch!r} is a {type(old).__name__}; "
                f"the checkpoint records a {s.kind.value}"
            )
        parent_name, _, child = s.name.rpartition(".")
        setattr(module.get_submodule(parent_name), child, _resized(old, s))
    return module


def save_module(
    directory: str | Path,
    module: nn.Module,
    arch: ArchConfig,
    *,
    fit: FitConfig | None = None,
    metrics: Metrics | None = None,
    dataset: Dataset | None = None,
) -> Path:
    """Write ``module``'s checkpoint into ``directory``; returns the folder.

    A module that matches ``arch`` is written by :func:`save_checkpoint` as is; a pruned one
    gets the same two files plus the ``layers`` entry in ``model.json`` (written last).

    Raises:
        ConfigError: the folder cannot be written.
    """
    if matches_arch(module, arch):
        return save_checkpoint(directory, module, arch, fit, metrics, dataset=dataset)
    return write_checkpoint(
        directory,
        module.state_dict(),
        arch,
        fit,
        metrics,
        dataset=dataset,
        extra={LAYERS_KEY: [s.to_dict() for s in layer_shapes(module)]},
    )


def _recorded_layers(folder: Path) -> tuple[LayerShape, ...] | None:
    raw = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
    layers = raw.get(LAYERS_KEY) if isinstance(raw, dict) else None
    if layers is None:
        return None
    if not isinstance(layers, list):
        raise UntrustedArtifactError(f"{str(folder / CONFIG)!r}: 'layers' is not a list")
    return tuple(LayerShape.from_dict(d) for d in layers)


def load_module(directory: str | Path) -> tuple[nn.Module, ArchConfig]:
    """Rebuild the module of a checkpoint folder, pruned or not; returned in eval mode.

    Raises:
        NotFoundError: ``model.json`` or ``model.pt`` is missing.
        UntrustedArtifactError: a file is corrupt, was swapped, or holds more than tensors.
        ConfigError: the config is invalid or does not match the weights' names and shapes.
    """
    folder = Path(directory)
    info = read_checkpoint(folder)  # checks the file exists, parses, and is a checkpoint
    shapes = _recorded_layers(folder)
    if shapes is None:
        return load_checkpoint(folder)
    module = rebuild(info.arch, shapes)
    state = read_weights(folder / WEIGHTS, info.weights_sha256)
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise ConfigError(
            f"checkpoint weights {str(folder / WEIGHTS)!r} do not match the layer widths "
            f"recorded in {str(folder / CONFIG)!r}: {exc}",
            hint="the config and weights come from different models; run the optimizer again",
        ) from exc
    return module.eval(), info.arch
