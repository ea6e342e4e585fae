"""FedAdam (Reddi et al. 2021, "Adaptive Federated Optimization", Algorithm 2).

The update rule is :func:`edgeloop.federated.aggregate.adam_step`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from edgeloop.federated.aggregate import adam_step
from edgeloop.federated.fedopt import ServerOptimizer
from edgeloop.federated.strategy import (
    STRATEGIES,
    Aggregate,
    ServerState,
    fedavg_delta,
    total_samples,
)
from edgeloop.federated.update import ClientUpdate, Vector


@dataclass(frozen=True, slots=True)
class FedAdam:
    """Server-side Adam on D_t, the sample-weighted mean client change."""

    optimizer: ServerOptimizer = field(default_factory=ServerOptimizer)

    @property
    def name(self) -> str:
        return "fedadam"

    def aggregate(
        self, global_weights: Vector, updates: Sequence[ClientUpdate], state: ServerState
    ) -> Aggregate:
        delta = fedavg_delta(global_weights, updates)
        m, v = self.optimizer.moments(state, global_weights)
        o = self.optimizer
        weights, m, v = adam_step(
            global_weights, delta, m, v, lr=o.lr, beta1=o.beta1, beta2=o.beta2, tau=o.tau
        )
        return Aggregate(
            weights,
            ServerState(step=state.step + 1, m=m, v=v),
            len(updates),
            total_samples(updates),
        )


def _create(**params: float) -> FedAdam:
    return FedAdam(ServerOptimizer(**params))


STRATEGIES.register("fedadam")(_create)
