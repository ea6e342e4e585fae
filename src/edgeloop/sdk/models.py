"""``EdgeModel``, ``ModelType`` and ``DeploymentTarget``: how a user describes a model.

An ``EdgeModel`` states figures (accuracy, latency, memory); the SDK never reports them as
measured: ``deploy_model`` returns them beside the registered model's measured ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from edgeloop.core.errors import ConfigError
from edgeloop.core.types import ModelRef


class ModelType(StrEnum):
    CNN = "cnn"
    MLP = "mlp"
    RNN = "rnn"
    TRANSFORMER = "transformer"
    AUTOENCODER = "autoencoder"
    OTHER = "other"


class DeploymentTarget(StrEnum):
    CPU = "cpu"
    GPU = "gpu"
    NPU = "npu"
    TPU = "tpu"
    MCU = "mcu"


Shape = tuple[int | None, ...]


@dataclass(frozen=True, slots=True)
class EdgeModel:
    """A model as the user states it. ``model_id`` is a registered ``name`` or ``name:version``.

    Shapes may include the batch dimension or leave it out; ``None`` (or -1) is a free dimension.
    ``accuracy`` is a fraction in [0, 1] (a value in (1, 100] is read as a percentage).
    """

    model_id: str
    name: str
    model_type: ModelType = ModelType.CNN
    input_shape: Shape | None = None
    output_shape: Shape | None = None
    parameters: int | None = None
    accuracy: float | None = None
    latency_ms: float | None = None
    memory_mb: float | None = None

    def __post_init__(self) -> None:
        ModelRef.parse(self.model_id)  # ConfigError naming the bad ref
        object.__setattr__(self, "model_type", ModelType(self.model_type))
        for label in ("input_shape", "output_shape"):
            shape = getattr(self, label)
            if shape is not None:
                object.__setattr__(self, label, _shape(label, shape))
        for label in ("parameters", "latency_ms", "memory_mb"):
            value = getattr(self, label)
            if value is not None and value < 0:
                raise ConfigError(f"EdgeModel {label}={value!r} is negative; expected >= 0")
        if self.accuracy is not None:
            acc = self.accuracy / 100.0 if 1.0 < self.accuracy <= 100.0 else self.accuracy
            if not 0.0 <= acc <= 1.0:
                raise ConfigError(
                    f"EdgeModel accuracy={self.accuracy!r} is not a fraction in [0, 1] "
                    "(or a percentage in (1, 100])"
                )
            object.__setattr__(self, "accuracy", acc)

    def stated(self) -> dict[str, float | None]:
        """The figures the user stated (not measured by edgeloop)."""
        return {
            "accuracy": self.accuracy,
            "latency_ms": self.latency_ms,
            "memory_mb": self.memory_mb,
            "parameters": None if self.parameters is None else float(self.parameters),
        }


def _shape(label: str, shape: object) -> Shape:
    if not isinstance(shape, tuple | list) or not shape:
        raise ConfigError(f"EdgeModel {label}={shape!r} is not a shape; expected e.g. (1, 28, 28)")
    dims: list[int | None] = []
    for d in shape:
        if d is None or d == -1:
            dims.append(None)
        elif isinstance(d, int) and d > 0:
            dims.append(d)
        else:
            raise ConfigError(
                f"EdgeModel {label}={shape!r} has dimension {d!r}; expected positive ints "
                "or None / -1 for a free one"
            )
    return tuple(dims)


def shapes_match(declared: Shape, registered: Shape) -> bool:
    """Whether a declared shape fits a registered one; the batch dimension may be left out."""
    candidates = [registered]
    if len(registered) == len(declared) + 1:
        candidates.append(registered[1:])
    return any(
        len(c) == len(declared)
        and all(a is None or b is None or a == b for a, b in zip(declared, c, strict=True))
        for c in candidates
    )
