"""Coordinate-wise trimmed mean (Yin et al. 2018): drop the beta-fraction extremes per axis."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from edgeloop.core.errors import ConfigError
from edgeloop.federated.aggregate import trimmed_mean
from edgeloop.federated.strategy import STRATEGIES, Aggregate, ServerState, stack, total_samples
from edgeloop.federated.update import ClientUpdate, Vector


@dataclass(frozen=True, slots=True)
class TrimmedMean:
    """Tolerates up to floor(beta*n) poisoned clients per coordinate; counts are ignored."""

    beta: float = 0.1

    def __post_init__(self) -> None:
        if not 0.0 <= self.beta < 0.5:
            raise ConfigError(f"trimmed mean beta must be in [0, 0.5), got {self.beta}")

    @property
    def name(self) -> str:
        return "trimmed-mean"

    def aggregate(
        self, global_weights: Vector, updates: Sequence[ClientUpdate], state: ServerState
    ) -> Aggregate:
        rows, _ = stack(global_weights, updates)
        return Aggregate(
            trimmed_mean(rows, self.beta),
            ServerState(step=state.step + 1),
            len(updates),
            total_samples(updates),
        )


STRATEGIES.register("trimmed-mean")(TrimmedMean)
