"""The server strategy interface, its state and result, and the registry of strategies.

A strategy is a frozen value holding its hyper-parameters; :meth:`Strategy.aggregate` is pure:
(global weights, accepted updates, server state) -> (new weights, new state). The state carries
what server optimizers remember between rounds (FedAvgM's velocity, FedAdam's m and v), so a
control plane can persist it and resume after a restart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from edgeloop.core.errors import ConfigError
from edgeloop.federated.aggregate import weighted_average
from edgeloop.federated.registry import Registry
from edgeloop.federated.update import ClientUpdate, Vector


@dataclass(frozen=True, slots=True)
class ServerState:
    """What a server optimizer remembers: rounds aggregated and its moment vectors."""

    step: int = 0
    m: Vector | None = None  # FedAvgM velocity, FedAdam/FedYogi first moment
    v: Vector | None = None  # FedAdam/FedYogi second moment


@dataclass(frozen=True, slots=True)
class Aggregate:
    """A new global model and the state to carry into the next round."""

    weights: Vector
    state: ServerState
    num_clients: int
    num_samples: int


class Strategy(Protocol):
    """How the server turns accepted updates into the next global model."""

    @property
    def name(self) -> str: ...

    def aggregate(
        self, global_weights: Vector, updates: Sequence[ClientUpdate], state: ServerState
    ) -> Aggregate: ...


STRATEGIES: Registry[Strategy] = Registry("strategy")


def stack(global_weights: Vector, updates: Sequence[ClientUpdate]) -> tuple[Vector, Vector]:
    """Client weights as a (clients, params) matrix and their sample counts.

    Raises:
        ConfigError: no updates, or one whose size differs from the global model's.
    """
    if not updates:
        raise ConfigError("no accepted updates to aggregate", hint="wait for min_fit_clients")
    for u in updates:
        if u.weights.size != global_weights.size:
            raise ConfigError(
                f"update from {u.node_id!r} has {u.weights.size} values, "
                f"the global model {global_weights.size}",
                hint="screen updates with edgeloop.federated.update.screen first",
            )
    rows = np.stack([u.weights for u in updates])
    counts = np.array([u.num_samples for u in updates], dtype=np.float64)
    return rows, counts


def fedavg_delta(global_weights: Vector, updates: Sequence[ClientUpdate]) -> Vector:
    """The sample-weighted mean client change  sum_i n_i (x_i - x) / sum_i n_i."""
    rows, counts = stack(global_weights, updates)
    return weighted_average(rows, counts) - global_weights


def total_samples(updates: Sequence[ClientUpdate]) -> int:
    return sum(u.num_samples for u in updates)
