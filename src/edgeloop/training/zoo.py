"""The model zoo: small architectures for edge devices, registered by name.

An :class:`ArchConfig` is everything needed to rebuild a module (checkpoints store it next to
the weights), so the weights file never has to hold a pickled module. ``input_shape`` is the
shape of ONE sample, without the batch axis.

| name            | sample shape       | for                                          |
|-----------------|--------------------|----------------------------------------------|
| ``mlp``         | any (flattened)    | tabular features                             |
| ``cnn``         | (channels, h, w)   | small images (digits)                        |
| ``ds-cnn``      | (channels, h, w)   | keyword spotting on MFCC-like (1, 49, 10)    |
| ``cnn1d``       | (channels, time)   | multichannel signals (BasicMotions 6 x 100)  |
| ``autoencoder`` | any (flattened)    | anomaly detection on windows of normal data  |
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from edgeloop.core.errors import ConfigError, ConflictError
from edgeloop.data.dataset import Modality, Task
from edgeloop.training import nets
from edgeloop.training.nets import AnomalyScorer, Autoencoder, Probabilities

__all__ = [
    "AnomalyScorer",
    "ArchConfig",
    "ArchSpec",
    "Autoencoder",
    "Probabilities",
    "arch_spec",
    "build",
    "default_arch",
    "deployable",
    "known_archs",
    "parameter_count",
    "register",
    "suggest_arch",
]


@dataclass(frozen=True, slots=True)
class ArchConfig:
    """Name of an architecture plus the sizes that rebuild it exactly.

    ``width`` is the base number of channels (convolutions) or hidden units / 4 (dense nets).

    Raises:
        ConfigError: unknown ``arch``, a sample shape the arch cannot take, or sizes out of range.
    """

    arch: str
    input_shape: tuple[int, ...]
    num_classes: int
    width: int = 32
    dropout: float = 0.1

    def __post_init__(self) -> None:
        spec = arch_spec(self.arch)
        if not self.input_shape or any(
            not isinstance(d, int) or isinstance(d, bool) or d < 1 for d in self.input_shape
        ):
            raise ConfigError(
                f"input shape {self.input_shape} is not valid; expected positive ints, one sample "
                "without the batch axis, e.g. (1, 8, 8)",
            )
        spec.check_shape(self.input_shape)
        if not 1 <= self.width <= 4096:
            raise ConfigError(
                f"width {self.width} is out of range; expected 1..4096",
                hint="the default 32 suits small edge models",
            )
        if not (math.isfinite(self.dropout) and 0.0 <= self.dropout < 1.0):
            raise ConfigError(f"dropout {self.dropout} is out of range; expected 0 <= dropout < 1")
        least = 1 if spec.task is Task.ANOMALY else 2
        if self.num_classes < least:
            raise ConfigError(
                f"num_classes {self.num_classes} is too small for arch {self.arch!r}; "
                f"expected >= {least}",
            )

    @property
    def task(self) -> Task:
        """What the module's output means: class logits or a reconstruction of the input."""
        return arch_spec(self.arch).task

    def to_dict(self) -> dict[str, Any]:
        return {
            "arch": self.arch,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "width": self.width,
            "dropout": self.dropout,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ArchConfig:
        """Rebuild from :meth:`to_dict` output; raises ConfigError on missing or bad keys."""
        try:
            return cls(
                arch=str(d["arch"]),
                input_shape=tuple(int(v) for v in d["input_shape"]),
                num_classes=int(d["num_classes"]),
                width=int(d.get("width", 32)),
                dropout=float(d.get("dropout", 0.1)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                f"architecture config {dict(d)!r} is not valid: {exc!r}",
                hint="expected keys arch, input_shape, num_classes[, width, dropout]",
            ) from exc


# --- registry --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ArchSpec:
    """A registered architecture: how to build it and which sample shapes it takes.

    ``sample_ndim`` None means any shape (the net flattens it); ``min_size`` is the least size of
    every axis after the channel axis (pooling and strided convolutions need room).
    """

    name: str
    build: Callable[[ArchConfig], nn.Module]
    task: Task
    sample_ndim: int | None
    layout: str
    min_size: int = 1

    def check_shape(self, shape: tuple[int, ...]) -> None:
        """Raise ConfigError naming ``shape`` and the arch that fits it, if this one does not."""
        if self.sample_ndim is None:
            return
        if len(shape) != self.sample_ndim:
            raise ConfigError(
                f"arch {self.name!r} takes one sample of shape {self.layout}; got {shape}",
                hint=f"for samples of shape {shape} use arch {suggest_arch(shape, self.task)!r}",
            )
        small = [d for d in shape[1:] if d < self.min_size]
        if small:
            raise ConfigError(
                f"arch {self.name!r} needs every axis after the channels >= {self.min_size}; "
                f"got sample shape {shape}",
                hint=f"use arch {suggest_arch((math.prod(shape),), self.task)!r} on the "
                "flattened sample",
            )


_REGISTRY: dict[str, ArchSpec] = {}


def register(spec: ArchSpec) -> None:
    """Add an architecture; raises ConflictError when the name is taken."""
    if spec.name in _REGISTRY:
        raise ConflictError(
            f"architecture {spec.name!r} is already registered",
            hint="pick another name for the new architecture",
        )
    _REGISTRY[spec.name] = spec


def known_archs() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def arch_spec(name: str) -> ArchSpec:
    """The registered spec of ``name``; raises ConfigError listing the known names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"architecture {name!r} is not known; expected one of {', '.join(_REGISTRY)}",
            hint="pass --arch with one of the known names, or omit it to pick one from the data",
        ) from None


def suggest_arch(shape: tuple[int, ...], task: Task = Task.CLASSIFICATION) -> str:
    """The default arch for samples of ``shape`` (an anomaly task always gets the autoencoder)."""
    if task is Task.ANOMALY:
        return "autoencoder"
    return {3: "cnn", 2: "cnn1d"}.get(len(shape), "mlp")


def default_arch(modality: Modality, task: Task) -> str:
    """The arch to train when the user names none: the zoo's pick per modality and task."""
    if task is Task.ANOMALY:
        return "autoencoder"
    return {Modality.IMAGE: "cnn", Modality.SIGNAL: "cnn1d", Modality.TABULAR: "mlp"}[modality]


def build(config: ArchConfig) -> nn.Module:
    """A freshly initialised module for ``config`` (uses torch's global RNG for the weights)."""
    return arch_spec(config.arch).build(config)


def deployable(module: nn.Module, config: ArchConfig) -> nn.Module:
    """What gets exported and served, built around the trained ``module`` (weights shared).

    Classifiers answer class probabilities, shape (N, num_classes): the softmax is part of the
    model so a server reports ``prediction`` (argmax) and ``confidence`` (max) without knowing
    what produced the model -- the same contract as any exported model with a softmax head.
    Accuracy is unchanged (softmax keeps the argmax). The autoencoder answers the per-sample
    anomaly score, shape (N,). The result is in eval mode.

    Raises:
        ConfigError: ``module`` is not what ``config`` builds (an autoencoder config with a
            module that is not an :class:`Autoencoder`).
    """
    if config.task is Task.ANOMALY:
        if not isinstance(module, Autoencoder):
            raise ConfigError(
                f"arch {config.arch!r} expects an Autoencoder module; got {type(module).__name__}",
                hint="pass the module that build(config) or fit() returned",
            )
        return AnomalyScorer(module).eval()
    return Probabilities(module).eval()


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


for _spec in (
    ArchSpec("mlp", nets.mlp, Task.CLASSIFICATION, None, "(features,) or any (flattened)"),
    ArchSpec("cnn", nets.cnn, Task.CLASSIFICATION, 3, "(channels, height, width)", min_size=2),
    ArchSpec(
        "ds-cnn", nets.ds_cnn, Task.CLASSIFICATION, 3, "(channels, time, frequency)", min_size=2
    ),
    ArchSpec("cnn1d", nets.cnn1d, Task.CLASSIFICATION, 2, "(channels, time)", min_size=2),
    ArchSpec(
        "autoencoder",
        lambda c: Autoencoder(c.input_shape, c.width, c.dropout),
        Task.ANOMALY,
        None,
        "any (flattened)",
    ),
):
    register(_spec)
