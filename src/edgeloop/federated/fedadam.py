"""FedAdam (Reddi et al. 2021, "Adaptive Federated Optimization", Algorithm 2).

The second-moment rule is :func:`edgeloop.federated.aggregate.adam_second_moment`; the rest of
the step is shared: :func:`edgeloop.federated.fedopt.adaptive_aggregate`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from edgeloop.federated.aggregate import adam_second_moment
from edgeloop.federated.fedopt import ServerOptimizer, adaptive_aggregate
from edgeloop.federated.strategy import STRATEGIES, Aggregate, ServerState
from edgeloop.federated.update import ClientUpdate, Vector


@dataclass(frozen=True, slots=True)
class FedAdam:
    optimizer: ServerOptimizer = field(default_factory=ServerOptimizer)

    @property
    def name(self) -> str:
        return "fedadam"

    def aggregate(
        self, global_weights: Vector, updates: Sequence[ClientUpdate], state: ServerState
    ) -> Aggregate:
        return adaptive_aggregate(
            self.optimizer, adam_second_moment, global_weights, updates, state
        )


def _create(**params: float) -> FedAdam:
    return FedAdam(ServerOptimizer(**params))


STRATEGIES.register("fedadam")(_create)
