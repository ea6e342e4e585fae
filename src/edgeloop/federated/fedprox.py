"""FedProx (Li et al. 2020): FedAvg on the server, a proximal term on each client.

The server side is FedAvg (weighted by samples). Each client minimises
    F_k(w) + (mu / 2) * ||w - w_t||^2
where w_t is the round's global model, so local models cannot drift far on heterogeneous data;
mu = 0 is FedAvg. :func:`proximal_term` and :func:`proximal_gradient` are that term and its
gradient mu (w - w_t), for a client's training loop to add to its loss / gradient.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgeloop.core.errors import ConfigError
from edgeloop.federated.fedavg import FedAvg
from edgeloop.federated.strategy import STRATEGIES, Aggregate, ServerState
from edgeloop.federated.update import ClientUpdate, Vector


def proximal_term(weights: Vector, global_weights: Vector, mu: float) -> float:
    """(mu / 2) * ||w - w_t||_2^2."""
    diff = np.asarray(weights, dtype=np.float64) - np.asarray(global_weights, dtype=np.float64)
    return 0.5 * mu * float(diff @ diff)


def proximal_gradient(weights: Vector, global_weights: Vector, mu: float) -> Vector:
    """d/dw of :func:`proximal_term`: mu * (w - w_t)."""
    return mu * (np.asarray(weights, dtype=np.float64) - np.asarray(global_weights))


@dataclass(frozen=True, slots=True)
class FedProx:
    """FedAvg on the server; ``mu`` is sent to the clients with the round's task."""

    mu: float = 0.01

    def __post_init__(self) -> None:
        if not self.mu >= 0.0:
            raise ConfigError(f"FedProx mu must be >= 0, got {self.mu}", hint="try mu=0.01")

    @property
    def name(self) -> str:
        return "fedprox"

    def aggregate(
        self, global_weights: Vector, updates: Sequence[ClientUpdate], state: ServerState
    ) -> Aggregate:
        return FedAvg().aggregate(global_weights, updates, state)


STRATEGIES.register("fedprox")(FedProx)
