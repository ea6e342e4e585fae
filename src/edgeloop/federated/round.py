"""A federated round: its states, the allowed transitions (checked in one place), participation.

States (STYLE habit 7; Flower keeps allowed transitions as a set of pairs, so do we):

    CREATED -> SELECTING -> TRAINING -> [MASKING ->] AGGREGATING -> EVALUATING -> DONE
    any state but DONE/FAILED -> FAILED

MASKING is the secure-aggregation unmasking step; rounds without SecAgg go TRAINING ->
AGGREGATING. :func:`transition` is pure: it returns the new state or raises.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass

from edgeloop.core.errors import ConfigError, ConflictError
from edgeloop.federated.strategy import Aggregate, ServerState, Strategy
from edgeloop.federated.update import ClientUpdate, Screening, UpdateLimits, Vector, screen


class RoundState(enum.Enum):
    CREATED = "created"
    SELECTING = "selecting"
    TRAINING = "training"
    MASKING = "masking"
    AGGREGATING = "aggregating"
    EVALUATING = "evaluating"
    DONE = "done"
    FAILED = "failed"


S = RoundState
TERMINAL = frozenset({S.DONE, S.FAILED})
ALLOWED: frozenset[tuple[RoundState, RoundState]] = frozenset(
    {
        (S.CREATED, S.SELECTING),
        (S.SELECTING, S.TRAINING),
        (S.TRAINING, S.MASKING),
        (S.TRAINING, S.AGGREGATING),
        (S.MASKING, S.AGGREGATING),
        (S.AGGREGATING, S.EVALUATING),
        (S.EVALUATING, S.DONE),
    }
    | {(state, S.FAILED) for state in S if state not in TERMINAL}
)


def transition(current: RoundState, target: RoundState) -> RoundState:
    """``target`` if (current, target) is allowed.

    Raises:
        ConflictError: the transition is not in :data:`ALLOWED`.
    """
    if (current, target) not in ALLOWED:
        allowed = sorted(t.value for (f, t) in ALLOWED if f is current)
        raise ConflictError(
            f"a round cannot go from {current.value!r} to {target.value!r}",
            hint=f"from {current.value!r} it may go to: {', '.join(allowed) or 'nothing (final)'}",
        )
    return target


@dataclass(frozen=True, slots=True)
class Participation:
    """Partial participation (Flower's fraction_fit / min_fit_clients / min_available_clients).

    A round asks max(ceil(fraction * available), min_clients) clients and succeeds when at least
    ``min_clients`` accepted updates arrived before the deadline.
    """

    fraction: float = 1.0
    min_clients: int = 2
    min_available: int = 2

    def __post_init__(self) -> None:
        if not 0.0 < self.fraction <= 1.0 or self.min_clients < 1:
            raise ConfigError(
                f"fraction must be in (0, 1] and min_clients >= 1, got {self.fraction}, "
                f"{self.min_clients}",
                hint="e.g. fraction=0.5, min_clients=2",
            )
        if self.min_available < self.min_clients:
            raise ConfigError(
                f"min_available={self.min_available} < min_clients={self.min_clients}",
                hint="min_available must be at least min_clients",
            )

    def clients_to_ask(self, available: int) -> int:
        """How many clients to select among ``available``.

        Raises:
            ConfigError: fewer available than ``min_available`` (too few eligible clients).
        """
        if available < self.min_available:
            raise ConfigError(
                f"{available} eligible clients, the round needs at least {self.min_available}",
                hint="start more agents or lower min_available / min_clients",
            )
        return min(available, max(math.ceil(self.fraction * available), self.min_clients))


@dataclass(frozen=True, slots=True)
class Deadline:
    """When to stop waiting for stragglers: everyone answered, or ``seconds`` have passed.

    Times are given by the caller (a monotonic clock), so the rule stays pure.
    """

    seconds: float = 60.0

    def __post_init__(self) -> None:
        if not self.seconds > 0:
            raise ConfigError(f"a round deadline must be > 0 s, got {self.seconds}")

    def should_close(self, elapsed_s: float, answered: int, asked: int) -> bool:
        return answered >= asked or elapsed_s >= self.seconds


@dataclass(frozen=True, slots=True)
class RoundOutcome:
    """How a round ended: DONE with a new model, or FAILED with the reason; never half-applied."""

    round: int
    state: RoundState
    aggregate: Aggregate | None
    screening: Screening
    selected: tuple[str, ...]
    dropouts: tuple[str, ...]
    reason: str = ""


def close_round(
    *,
    round: int,
    strategy: Strategy,
    global_weights: Vector,
    state: ServerState,
    selected: Sequence[str],
    updates: Sequence[ClientUpdate],
    limits: UpdateLimits,
    participation: Participation,
) -> RoundOutcome:
    """Screen what arrived, then aggregate with the clients that answered (or fail the round).

    Clients selected but absent from the accepted updates are dropouts. With fewer accepted
    updates than ``participation.min_clients`` the round FAILS and the global model is unchanged.
    """
    screening = screen(updates, limits)
    answered = {u.node_id for u in screening.accepted}
    dropouts = tuple(n for n in selected if n not in answered)
    if len(screening.accepted) < participation.min_clients:
        reason = (
            f"{len(screening.accepted)} accepted updates, the round needs "
            f"{participation.min_clients} ({len(screening.rejected)} rejected, "
            f"{len(dropouts)} dropouts)"
        )
        return RoundOutcome(round, S.FAILED, None, screening, tuple(selected), dropouts, reason)
    result = strategy.aggregate(global_weights, screening.accepted, state)
    return RoundOutcome(round, S.AGGREGATING, result, screening, tuple(selected), dropouts)
