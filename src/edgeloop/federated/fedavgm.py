"""FedAvgM (Hsu et al. 2019, "Measuring the Effects of Non-Identical Data Distribution"):
server momentum on the averaged client change."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgeloop.core.errors import ConfigError
from edgeloop.federated.aggregate import momentum_step
from edgeloop.federated.strategy import (
    STRATEGIES,
    Aggregate,
    ServerState,
    fedavg_delta,
    total_samples,
)
from edgeloop.federated.update import ClientUpdate, Vector


@dataclass(frozen=True, slots=True)
class FedAvgM:
    """v <- momentum*v + D;  x <- x + lr*v, D the sample-weighted mean client change.

    lr=1, momentum=0 is FedAvg exactly.
    """

    lr: float = 1.0
    momentum: float = 0.9

    def __post_init__(self) -> None:
        if not (self.lr > 0.0 and 0.0 <= self.momentum < 1.0):
            raise ConfigError(
                f"FedAvgM needs lr > 0 and 0 <= momentum < 1, got {self.lr}, {self.momentum}",
                hint="Hsu et al. use momentum=0.9, lr=1.0",
            )

    @property
    def name(self) -> str:
        return "fedavgm"

    def aggregate(
        self, global_weights: Vector, updates: Sequence[ClientUpdate], state: ServerState
    ) -> Aggregate:
        delta = fedavg_delta(global_weights, updates)
        velocity = state.m if state.m is not None else np.zeros_like(global_weights)
        weights, velocity = momentum_step(
            global_weights, delta, velocity, lr=self.lr, momentum=self.momentum
        )
        new_state = ServerState(step=state.step + 1, m=velocity)
        return Aggregate(weights, new_state, len(updates), total_samples(updates))


STRATEGIES.register("fedavgm")(FedAvgM)
