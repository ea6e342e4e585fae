"""The client's side of a federated round with torch: local SGD from the global model.

Weights travel as the flat float64 vectors of :mod:`edgeloop.federated` (parameters in
``named_parameters()`` order; the nets here have no buffers). ``mu > 0`` adds FedProx's
proximal term (mu/2)||w - w_t||^2 (Li et al. 2020; the pure formula is
:func:`edgeloop.federated.fedprox.proximal_term`).

The step is written out (:func:`sgd_step`) rather than taken from ``torch.optim.SGD``, whose
``step`` imports ``torch._dynamo`` on first use: ~70-80 MB of private memory in every training
worker of a fleet (issue 14), for an update that is one ``add_`` per parameter.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from edgeloop.core.errors import ConfigError
from edgeloop.federated.update import ClientUpdate, ParameterLayout


def digits_cnn() -> nn.Module:
    """The benchmark's net for 1x8x8 digits: Conv(1,16,3)-ReLU-Conv(16,32,3)-ReLU-Linear(512,10)."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(512, 10),
    )


def layout(model: nn.Module) -> ParameterLayout:
    names, shapes = zip(*((n, tuple(p.shape)) for n, p in model.named_parameters()), strict=True)
    return ParameterLayout(tuple(names), tuple(shapes))


def get_weights(model: nn.Module) -> npt.NDArray[np.float64]:
    """The model's parameters as one flat float64 vector."""
    with torch.no_grad():
        flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    return flat.to(torch.float64).numpy().copy()


def set_weights(model: nn.Module, weights: npt.ArrayLike) -> None:
    """Load a flat vector (float32 inside the model).

    Raises:
        ConfigError: the vector's length differs from the model's parameter count.
    """
    flat = torch.as_tensor(np.asarray(weights, dtype=np.float32).reshape(-1))
    total = sum(p.numel() for p in model.parameters())
    if flat.numel() != total:
        raise ConfigError(f"weights have {flat.numel()} values, the model {total} parameters")
    start = 0
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(flat[start : start + p.numel()].view_as(p))
            start += p.numel()


@dataclass(frozen=True, slots=True)
class LocalSGD:
    """Plain minibatch SGD: ``epochs`` passes, batches drawn by a seeded permutation."""

    lr: float = 0.05
    epochs: int = 1
    batch_size: int = 32
    mu: float = 0.0  # FedProx proximal weight; 0 is FedAvg's client

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.epochs < 1 or self.batch_size < 1 or self.mu < 0:
            raise ConfigError(
                f"local SGD needs lr > 0, epochs >= 1, batch_size >= 1, mu >= 0; got {self}"
            )


def train_local(
    model: nn.Module,
    global_weights: npt.ArrayLike,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    node_id: str,
    round: int,
    seed: int,
    config: LocalSGD,
) -> ClientUpdate:
    """Start from ``global_weights``, train on (x, y), return the update with the mean loss.

    The shuffle is ``torch.randperm(n, generator=manual_seed(seed))`` per epoch, the order
    torch's RandomSampler draws with the same generator.
    """
    set_weights(model, global_weights)
    params = list(model.parameters())
    anchor = [p.detach().clone() for p in params] if config.mu > 0 else []
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(seed)
    model.train()
    seen, loss_sum = 0, 0.0
    for _ in range(config.epochs):
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), config.batch_size):
            idx = order[start : start + config.batch_size]
            for p in params:  # zero_grad(set_to_none=True)
                p.grad = None
            loss = loss_fn(model(x[idx]), y[idx])
            if config.mu > 0:
                prox = sum(((p - a) ** 2).sum() for p, a in zip(params, anchor, strict=True))
                loss = loss + 0.5 * config.mu * prox
            loss.backward()
            sgd_step(params, config.lr)
            loss_sum += loss.item() * len(idx)
            seen += len(idx)
    metrics = {"loss": loss_sum / max(seen, 1)}
    return ClientUpdate(node_id, round, len(x), get_weights(model), metrics)


def sgd_step(params: list[nn.Parameter], lr: float) -> None:
    """w <- w - lr * grad in place, for each parameter that has a gradient.

    Bit for bit ``torch.optim.SGD(params, lr).step()`` without momentum, dampening, weight
    decay or nesterov on CPU tensors (its single-tensor path: ``param.add_(grad, alpha=-lr)``),
    without importing ``torch._dynamo``.
    """
    with torch.no_grad():
        for p in params:
            if p.grad is not None:
                p.add_(p.grad, alpha=-lr)


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) on a held-out set."""
    model.eval()
    with torch.no_grad():
        logits = model(x)
        loss = float(nn.functional.cross_entropy(logits, y))
        accuracy = float((logits.argmax(1) == y).float().mean())
    return loss, accuracy
