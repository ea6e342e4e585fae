"""The one verb set every optimizer follows, and the value it yields.

An optimizer is built from parameters only (its constructor validates and stores them),
``fit(data)`` learns what it needs from the data (calibration ranges, fine-tuning) and returns
``self``, and ``apply(source, out)`` writes a new model file and returns a :class:`Variant` that
records the exact settings, the tool versions and the parity against its parent measured on
held-out data. Optimizers register by name (:func:`register`); :func:`create` builds one from
its name and settings and lists the known names when asked for an unknown one.

Data discipline: ``fit`` may look at ``splits.train`` (and ``splits.val`` for early stopping);
``splits.test`` is only ever used to measure (parity here, accuracy in :mod:`edgeloop.bench`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self, runtime_checkable

from edgeloop.core.errors import ConfigError, NotFoundError
from edgeloop.core.types import Parity
from edgeloop.data.dataset import Splits


@dataclass(frozen=True, slots=True)
class ModelSource:
    """What an optimizer starts from.

    ``onnx`` is always given (ONNX-level methods such as quantization work on it); ``checkpoint``
    is the torch checkpoint folder written by :func:`edgeloop.training.save_checkpoint`, needed by
    methods that change weights with training (QAT, pruning with fine-tuning, distillation).
    """

    onnx: Path
    checkpoint: Path | None = None
    name: str = "model"


@dataclass(frozen=True, slots=True)
class Variant:
    """A model file an optimizer produced, with how it was made and how close it stays.

    ``settings`` are the exact parameters (enough to reproduce it); ``tools`` the versions of the
    libraries that did the work; ``parity`` compares its outputs with the parent's on held-out
    samples; ``notes`` say what a user must know (e.g. "FP16 gives no CPU speed-up here").
    """

    method: str
    path: Path
    settings: Mapping[str, Any]
    tools: Mapping[str, str]
    parity: Parity
    parent: Path
    checkpoint: Path | None = None
    notes: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "output": str(self.path),
            "settings": dict(self.settings),
            "tools": dict(self.tools),
            "parity": self.parity.to_dict(),
            "parent": str(self.parent),
            "checkpoint": None if self.checkpoint is None else str(self.checkpoint),
            "notes": list(self.notes),
            **({"extra": dict(self.extra)} if self.extra else {}),
        }


@runtime_checkable
class Optimizer(Protocol):
    """The verb set (scikit-learn style): parameters in ``__init__``, ``fit``, ``apply``.

    ``needs_checkpoint`` says whether ``apply`` needs ``source.checkpoint`` (torch weights);
    ``needs_data`` whether the method learns from the data (calibration, fine-tuning). Every
    method is fitted before ``apply`` all the same: parity is measured on the held-out split.
    """

    name: ClassVar[str]
    needs_data: ClassVar[bool]
    needs_checkpoint: ClassVar[bool]

    def fit(self, data: Splits) -> Self: ...

    def apply(self, source: ModelSource, out: Path) -> Variant: ...

    def get_params(self) -> dict[str, Any]: ...


_REGISTRY: dict[str, Callable[..., Optimizer]] = {}


def register(name: str) -> Callable[[Callable[..., Optimizer]], Callable[..., Optimizer]]:
    """Class decorator: make an optimizer buildable by ``name`` through :func:`create`."""

    def add(factory: Callable[..., Optimizer]) -> Callable[..., Optimizer]:
        if name in _REGISTRY:
            raise ConfigError(f"an optimizer named {name!r} is already registered")
        _REGISTRY[name] = factory
        return factory

    return add


def known_methods() -> tuple[str, ...]:
    _load_builtin()
    return tuple(sorted(_REGISTRY))


def create(name: str, **params: Any) -> Optimizer:
    """Build the optimizer registered as ``name`` with ``params``.

    Raises:
        NotFoundError: unknown name (the message lists the known ones).
        ConfigError: parameters the optimizer rejects.
    """
    _load_builtin(BUILTIN_METHODS.get(name))
    if name not in _REGISTRY:
        _load_builtin()
        raise NotFoundError(
            f"unknown optimization method {name!r}; known: {', '.join(sorted(_REGISTRY))}",
            hint="`edgeloop optimize --list` describes each method",
        )
    try:
        return _REGISTRY[name](**params)
    except TypeError as exc:
        raise ConfigError(f"method {name!r} does not take these settings: {exc}") from exc


class OptimizerBase:
    """Shared plumbing: ``fit`` keeps the held-out samples parity is measured on.

    Every optimizer is fitted before ``apply`` -- methods that learn nothing from data still need
    held-out samples to measure the parity their :class:`Variant` reports. Subclasses that learn
    (calibration, fine-tuning) extend :meth:`fit` and call ``super().fit(data)``.
    """

    name: ClassVar[str] = "base"
    needs_data: ClassVar[bool] = False
    needs_checkpoint: ClassVar[bool] = False
    # How many held-out samples parity uses (all of a small test split).
    parity_samples: ClassVar[int] = 1024

    def fit(self, data: Splits) -> Self:
        self.parity_x_ = data.test.x[: self.parity_samples]
        self.parity_split_ = f"{data.test.name} test"
        return self

    def get_params(self) -> dict[str, Any]:
        """The constructor's parameters (public attributes not ending in ``_``)."""
        return {
            k: (v.value if hasattr(v, "value") else v)
            for k, v in vars(self).items()
            if not k.startswith("_") and not k.endswith("_")
        }

    def measure_parity(self, parent: Path, variant: Path) -> Parity:
        """Compare ``variant``'s outputs with ``parent``'s on the held-out samples from ``fit``."""
        from edgeloop.formats.parity import measure_parity, onnx_predictor

        if not hasattr(self, "parity_x_"):
            raise ConfigError(
                f"method {self.name!r} was not fitted: call fit(splits) before apply()",
                hint="on the command line, pass --data",
            )
        return measure_parity(
            onnx_predictor(parent),
            onnx_predictor(variant),
            self.parity_x_,
            split=self.parity_split_,
        )


def require_checkpoint(optimizer: Optimizer, source: ModelSource) -> Path:
    """Return the torch checkpoint a weight-changing method needs, or say how to get one."""
    if source.checkpoint is None:
        raise ConfigError(
            f"method {optimizer.name!r} changes weights with training and needs the torch "
            f"checkpoint of {source.onnx.name}, not only the ONNX file",
            hint="pass --checkpoint DIR (written by `edgeloop train --out DIR`); ONNX-only "
            "methods are static-int8, dynamic-int8, fp16 and graph-opt",
        )
    return source.checkpoint


def _load_builtin(only: str | None = None) -> None:
    """Import the modules whose classes register themselves (kept lazy: some import torch).

    ``only`` imports just that module, so building an ONNX-level method never imports torch.
    """
    import importlib

    for module in [only] if only else sorted(set(BUILTIN_METHODS.values())):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            # An optional extra (torch, torch_pruning, openvino) is missing: those methods stay
            # unregistered and the unknown-name error lists what is available. A missing
            # edgeloop module other than the one imported is a bug and is raised.
            if exc.name and exc.name.startswith("edgeloop") and exc.name != module:
                raise


# Which module registers each built-in method; each is imported on first use.
BUILTIN_METHODS: dict[str, str] = {
    "static-int8": "edgeloop.optimize.quantize",
    "dynamic-int8": "edgeloop.optimize.quantize",
    "fp16": "edgeloop.optimize.quantize",
    "graph-opt": "edgeloop.optimize.graph",
    "prune-structured": "edgeloop.optimize.prune_structured",
    "prune-unstructured": "edgeloop.optimize.prune_unstructured",
    "qat": "edgeloop.optimize.qat",
    "distill": "edgeloop.optimize.distill",
    "nncf-int8": "edgeloop.optimize.openvino_quant",
}
