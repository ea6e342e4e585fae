"""FedAvg (McMahan et al. 2017): the mean of client weights, weighted by local sample counts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from edgeloop.federated.aggregate import weighted_average
from edgeloop.federated.strategy import STRATEGIES, Aggregate, ServerState, stack, total_samples
from edgeloop.federated.update import ClientUpdate, Vector


@dataclass(frozen=True, slots=True)
class FedAvg:
    """x_{t+1} = sum_k n_k x_k / sum_k n_k over the clients that answered."""

    @property
    def name(self) -> str:
        return "fedavg"

    def aggregate(
        self, global_weights: Vector, updates: Sequence[ClientUpdate], state: ServerState
    ) -> Aggregate:
        rows, counts = stack(global_weights, updates)
        new_state = ServerState(step=state.step + 1, m=state.m, v=state.v)
        return Aggregate(
            weighted_average(rows, counts), new_state, len(updates), total_samples(updates)
        )


STRATEGIES.register("fedavg")(FedAvg)
