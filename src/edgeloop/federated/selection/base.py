"""What a selector sees of each node (from fleet status) and what it answers: ids plus reasons.

Every selector is a frozen value with ``select(candidates, k, round) -> Selection``; the
selection lists a :class:`Decision` for every candidate, so a round's log says why each node was
or was not asked (issue 14 part 4).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from edgeloop.core.errors import ConfigError
from edgeloop.federated.registry import Registry


class PowerSource(enum.Enum):
    MAINS = "mains"
    BATTERY = "battery"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Candidate:
    """One node as fleet status reports it."""

    node_id: str
    online: bool = True
    device_class: str = "default"
    power: PowerSource = PowerSource.UNKNOWN
    battery: float | None = None  # 0..1 when on battery and known
    num_samples: int = 0
    local_loss: float | None = None  # last reported loss of the current global model
    last_selected: int | None = None  # round it last trained in; None: never
    load_per_core: float | None = None  # 1-minute load average / logical cores; None: unknown
    memory_available_mb: float | None = None  # None: unknown

    def __post_init__(self) -> None:
        if self.battery is not None and not 0.0 <= self.battery <= 1.0:
            raise ConfigError(f"battery of {self.node_id!r} must be in [0, 1], got {self.battery}")
        if self.num_samples < 0:
            raise ConfigError(f"num_samples of {self.node_id!r} is {self.num_samples} < 0")


class Why(enum.Enum):
    """The reason recorded per candidate."""

    SAMPLED = "sampled"
    NOT_SAMPLED = "not_sampled"
    OFFLINE = "offline"
    DEVICE_CLASS = "device_class_excluded"
    LOW_BATTERY = "low_battery"
    TOO_LITTLE_DATA = "too_little_data"
    BUSY = "busy"
    LOW_MEMORY = "low_memory"
    RANKED_IN = "ranked_in"
    RANKED_OUT = "ranked_out"
    NOT_IN_CANDIDATE_SET = "not_in_candidate_set"
    HIGHER_LOSS = "higher_loss"
    LOWER_LOSS = "lower_loss"
    LEAST_RECENTLY_SELECTED = "least_recently_selected"
    SELECTED_MORE_RECENTLY = "selected_more_recently"


@dataclass(frozen=True, slots=True)
class Decision:
    node_id: str
    chosen: bool
    why: Why
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Selection:
    """The chosen node ids (in pick order) and a decision for every candidate."""

    chosen: tuple[str, ...]
    decisions: tuple[Decision, ...]

    def reason(self, node_id: str) -> Decision:
        """The decision about ``node_id``.

        Raises:
            ConfigError: the node was not a candidate.
        """
        for d in self.decisions:
            if d.node_id == node_id:
                return d
        raise ConfigError(f"{node_id!r} was not a candidate in this selection")


class Selector(Protocol):
    @property
    def name(self) -> str: ...

    def select(self, candidates: Sequence[Candidate], k: int, round: int) -> Selection: ...


SELECTORS: Registry[Selector] = Registry("selector")


def check_request(candidates: Sequence[Candidate], k: int) -> None:
    """Raises ConfigError for k < 1 or repeated node ids."""
    if k < 1:
        raise ConfigError(f"a round must select k >= 1 clients, got {k}")
    ids = [c.node_id for c in candidates]
    if len(set(ids)) != len(ids):
        raise ConfigError("candidate node ids repeat", hint="list each node once")


def seed_for(seed: int, round: int) -> int:
    """One seed per (task seed, round): rounds differ, reruns repeat."""
    return seed * 1_000_003 + round
