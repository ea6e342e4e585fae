"""Convergence monitoring (issue 14 part 7): one record per round, plateau detection / early stop.

Per round: the global model's loss/accuracy on a server-side held-out set (when given), the
clients' sample-weighted local metrics, the norm of the global update ||x_{t+1} - x_t||, client
divergence mean_k ||x_k - x_{t+1}|| (how far local models drift from the aggregate; not
available under secure aggregation, where the server never sees x_k), participation, dropouts,
rejected updates and epsilon so far.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgeloop.core.errors import ConfigError
from edgeloop.federated.update import ClientUpdate, Vector


@dataclass(frozen=True, slots=True)
class RoundRecord:
    round: int
    participants: int
    dropouts: int
    rejected: int
    update_norm: float
    divergence: float | None = None
    client_loss: float | None = None
    client_accuracy: float | None = None
    global_loss: float | None = None
    global_accuracy: float | None = None
    epsilon: float | None = None


def weighted_metric(updates: Sequence[ClientUpdate], key: str) -> float | None:
    """sum_k n_k m_k / sum_k n_k over the clients that reported ``key``; None if none did."""
    pairs = [(u.num_samples, u.metrics[key]) for u in updates if key in u.metrics]
    total = sum(n for n, _ in pairs)
    return None if total == 0 else sum(n * m for n, m in pairs) / total


def divergence(new_weights: Vector, updates: Sequence[ClientUpdate]) -> float | None:
    """mean_k ||x_k - x_{t+1}||_2, or None without individual updates."""
    if not updates:
        return None
    return float(np.mean([np.linalg.norm(u.weights - new_weights) for u in updates]))


def record_round(
    round: int,
    old_weights: Vector,
    new_weights: Vector,
    updates: Sequence[ClientUpdate],
    *,
    participants: int | None = None,
    dropouts: int = 0,
    rejected: int = 0,
    global_loss: float | None = None,
    global_accuracy: float | None = None,
    epsilon: float | None = None,
) -> RoundRecord:
    """The record of one finished round; ``updates`` may be empty under secure aggregation."""
    return RoundRecord(
        round=round,
        participants=len(updates) if participants is None else participants,
        dropouts=dropouts,
        rejected=rejected,
        update_norm=float(np.linalg.norm(new_weights - old_weights)),
        divergence=divergence(new_weights, updates),
        client_loss=weighted_metric(updates, "loss"),
        client_accuracy=weighted_metric(updates, "accuracy"),
        global_loss=global_loss,
        global_accuracy=global_accuracy,
        epsilon=epsilon,
    )


class Metric(enum.Enum):
    """What plateau detection follows, and whether lower or higher is better."""

    GLOBAL_LOSS = ("global_loss", -1)
    GLOBAL_ACCURACY = ("global_accuracy", 1)
    CLIENT_LOSS = ("client_loss", -1)
    CLIENT_ACCURACY = ("client_accuracy", 1)

    def value_of(self, record: RoundRecord) -> float | None:
        value: float | None = getattr(record, self.value[0])
        return value

    @property
    def sign(self) -> int:
        return int(self.value[1])


@dataclass(frozen=True, slots=True)
class PlateauRule:
    """Stop when ``metric`` has not improved by more than ``min_delta`` for ``patience`` rounds
    (Keras EarlyStopping's rule, applied to rounds)."""

    metric: Metric = Metric.GLOBAL_LOSS
    patience: int = 3
    min_delta: float = 0.0

    def __post_init__(self) -> None:
        if self.patience < 1 or self.min_delta < 0:
            raise ConfigError(
                f"patience must be >= 1 and min_delta >= 0, got {self.patience}, {self.min_delta}"
            )


@dataclass(frozen=True, slots=True)
class Plateau:
    stop: bool
    best_round: int | None
    best_value: float | None
    rounds_since_best: int
    reason: str


def detect_plateau(history: Sequence[RoundRecord], rule: PlateauRule) -> Plateau:
    """Whether to stop, from the records so far (rounds without the metric are skipped)."""
    best_round: int | None = None
    best = -math.inf
    since = 0
    for record in history:
        value = rule.metric.value_of(record)
        if value is None:
            continue
        score = rule.metric.sign * value  # higher is better
        if best_round is None or score > best + rule.min_delta:
            best_round, best, since = record.round, score, 0
        else:
            since += 1
    name = rule.metric.value[0]
    if best_round is None:
        return Plateau(False, None, None, 0, f"no round reported {name} yet")
    best_value = rule.metric.sign * best
    stop = since >= rule.patience
    verdict = "plateau" if stop else "improving"
    reason = (
        f"{verdict}: best {name} {best_value:.4g} at round {best_round}, {since} rounds since "
        f"(patience {rule.patience}, min_delta {rule.min_delta})"
    )
    return Plateau(stop, best_round, best_value, since, reason)
