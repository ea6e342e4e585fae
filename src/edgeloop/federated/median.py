"""Coordinate-wise median (Yin et al. 2018): robust to fewer than half the clients poisoned."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from edgeloop.federated.aggregate import coordinate_median
from edgeloop.federated.strategy import STRATEGIES, Aggregate, ServerState, stack, total_samples
from edgeloop.federated.update import ClientUpdate, Vector


@dataclass(frozen=True, slots=True)
class CoordinateMedian:
    """x_{t+1}[j] = median_k x_k[j]; sample counts are ignored (a liar could inflate them)."""

    @property
    def name(self) -> str:
        return "median"

    def aggregate(
        self, global_weights: Vector, updates: Sequence[ClientUpdate], state: ServerState
    ) -> Aggregate:
        rows, _ = stack(global_weights, updates)
        return Aggregate(
            coordinate_median(rows),
            ServerState(step=state.step + 1),
            len(updates),
            total_samples(updates),
        )


STRATEGIES.register("median")(CoordinateMedian)
