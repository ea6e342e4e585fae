"""The models a federated task may train, by name: their parameter layout and input/output spec.

Pure data, so the control plane checks an update's shape and size without torch. The torch
modules with these exact layouts are built by :func:`edgeloop.training.federated_client.build`
(a test checks that the two agree).
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeloop.core.errors import NotFoundError
from edgeloop.federated.update import ParameterLayout


@dataclass(frozen=True, slots=True)
class FlModel:
    """A named architecture: its flat-vector layout, one sample's input shape, the classes."""

    name: str
    layout: ParameterLayout
    input_shape: tuple[int, ...]
    classes: int
    description: str

    @property
    def num_params(self) -> int:
        return self.layout.size


_CNN = ParameterLayout(
    ("0.weight", "0.bias", "2.weight", "2.bias", "5.weight", "5.bias"),
    ((16, 1, 3, 3), (16,), (32, 16, 3, 3), (32,), (10, 512), (10,)),
)
_MLP = ParameterLayout(
    ("1.weight", "1.bias", "3.weight", "3.bias"), ((32, 64), (32,), (10, 32), (10,))
)

MODELS: dict[str, FlModel] = {
    m.name: m
    for m in (
        FlModel("digits-cnn", _CNN, (1, 8, 8), 10,
                "Conv2d(1,16,3)-ReLU-Conv2d(16,32,3)-ReLU-Flatten-Linear(512,10): issue 14's net"),
        FlModel("digits-mlp", _MLP, (1, 8, 8), 10,
                "Flatten-Linear(64,32)-ReLU-Linear(32,10): a tiny net for tests"),
    )
}  # fmt: skip


def fl_model(name: str) -> FlModel:
    """The model named ``name``.

    Raises:
        NotFoundError: unknown name (the message lists the known ones).
    """
    found = MODELS.get(name)
    if found is None:
        raise NotFoundError(
            f"no federated model named {name!r}; known: {', '.join(sorted(MODELS))}",
            hint=f"pass --model with one of: {', '.join(sorted(MODELS))}",
        )
    return found
