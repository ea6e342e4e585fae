"""Adaptive inference: which variant of a model (FP32, INT8, pruned, ...) serves right now.

Each policy is a frozen config with pure decision functions over a frozen state (no clock, no
I/O), plus a small thread-safe holder (:class:`LoadSwitch`, :class:`PowerSwitch`) that keeps the
state, reads the clock and counts switches for metrics.

- :class:`LoadPolicy`: variants ordered from best to cheapest. The mean queue delay over each
  window of ``window_s`` seconds is compared with two marks: above ``high_ms`` step one variant
  cheaper, below ``low_ms`` step one back. The gap between the marks is the hysteresis that keeps
  the choice from flapping. A window in which no request came counts as no delay.
- :class:`PowerPolicy`: the best variant whose power draw fits a watts budget. Each variant's
  watts are either measured (a power meter reading, named by its source) or stated (a device
  profile's figure); the decision says which.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Protocol

from edgeloop.core.errors import ConfigError

Clock = Callable[[], float]  # seconds, monotonic


def _check_variants(variants: tuple[str, ...]) -> None:
    if len(variants) < 2 or len(set(variants)) != len(variants) or not all(variants):
        raise ConfigError(
            f"variants {list(variants)!r} are not valid; expected two or more distinct names, "
            "best first",
            hint="e.g. variants=('fp32', 'int8')",
        )


@dataclass(frozen=True, slots=True)
class LoadState:
    """Where a :class:`LoadPolicy` stands: the variant index and the open window's sums."""

    level: int
    window_start: float
    window_sum_ms: float = 0.0
    window_count: int = 0
    switches: int = 0
    reason: str = "start: best variant"


@dataclass(frozen=True, slots=True)
class LoadPolicy:
    """Step to a cheaper variant when queue delay stays high, back when it falls (pure)."""

    variants: tuple[str, ...]
    high_ms: float
    low_ms: float
    window_s: float = 1.0

    def __post_init__(self) -> None:
        _check_variants(self.variants)
        if not (math.isfinite(self.low_ms) and math.isfinite(self.high_ms)):
            raise ConfigError(f"marks low_ms={self.low_ms}, high_ms={self.high_ms} must be finite")
        if not 0 <= self.low_ms < self.high_ms:
            raise ConfigError(
                f"low_ms={self.low_ms} must be >= 0 and below high_ms={self.high_ms}",
                hint="the gap between the marks is the hysteresis; e.g. high 20 ms, low 5 ms",
            )
        if not self.window_s > 0:
            raise ConfigError(f"window_s={self.window_s} must be positive")

    def start(self, now: float) -> LoadState:
        """The initial state: the best variant, a window opening at ``now``."""
        return LoadState(level=0, window_start=now)

    def observe(self, state: LoadState, queue_ms: float, now: float) -> LoadState:
        """Add one request's queue delay at time ``now``; close windows that ended before it."""
        if now >= state.window_start + self.window_s:
            state = self._close(state, now)
        return replace(
            state,
            window_sum_ms=state.window_sum_ms + max(queue_ms, 0.0),
            window_count=state.window_count + 1,
        )

    def tick(self, state: LoadState, now: float) -> LoadState:
        """Close the window if it ended by ``now`` (call it when traffic may have stopped)."""
        return self._close(state, now) if now >= state.window_start + self.window_s else state

    def _close(self, state: LoadState, now: float) -> LoadState:
        mean = state.window_sum_ms / state.window_count if state.window_count else 0.0
        after = self.decide(state, mean)
        # Whole windows that passed without a request had no queue at all.
        if state.window_count and now >= state.window_start + 2 * self.window_s:
            after = self.decide(after, 0.0)
        # A switch is a change of the variant served: up and back within one call is none.
        switches = state.switches + int(after.level != state.level)
        return replace(
            after, switches=switches, window_start=now, window_sum_ms=0.0, window_count=0
        )

    def decide(self, state: LoadState, mean_ms: float) -> LoadState:
        """The state after a window whose mean queue delay was ``mean_ms``."""
        cheapest = len(self.variants) - 1
        if mean_ms > self.high_ms and state.level < cheapest:
            level = state.level + 1
            reason = f"mean queue delay {mean_ms:.2f} ms > {self.high_ms} ms"
        elif mean_ms < self.low_ms and state.level > 0:
            level = state.level - 1
            reason = f"mean queue delay {mean_ms:.2f} ms < {self.low_ms} ms"
        else:
            return state
        return replace(state, level=level, switches=state.switches + 1, reason=reason)

    def variant(self, state: LoadState) -> str:
        return self.variants[state.level]


class PowerBasis(StrEnum):
    """Where a variant's watts come from."""

    MEASURED = "measured"  # a power meter reading while the variant ran
    STATED = "stated"  # a device profile's figure, not measured here


@dataclass(frozen=True, slots=True)
class VariantPower:
    """The watts one variant draws and where that figure comes from (``source``)."""

    variant: str
    watts: float
    basis: PowerBasis
    source: str

    def __post_init__(self) -> None:
        if not math.isfinite(self.watts) or self.watts < 0:
            raise ConfigError(
                f"variant {self.variant!r}: {self.watts} W is not a non-negative number"
            )
        if not self.source:
            raise ConfigError(f"variant {self.variant!r}: a power figure needs its source")

    def to_dict(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "watts": self.watts,
            "basis": self.basis.value,
            "source": self.source,
        }


class PowerSample(Protocol):
    """A meter reading (``edgeloop.bench.power.PowerReading`` has this shape)."""

    @property
    def watts(self) -> float | None: ...
    @property
    def source(self) -> str: ...


@dataclass(frozen=True, slots=True)
class PowerDecision:
    """The variant picked under a power budget, with the figure that decided it."""

    variant: str
    budget_w: float
    watts: float | None
    basis: PowerBasis | None
    source: str
    within_budget: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "budget_w": self.budget_w,
            "watts": self.watts,
            "basis": None if self.basis is None else self.basis.value,
            "source": self.source,
            "within_budget": self.within_budget,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class PowerPolicy:
    """Pick the best variant (first in ``variants``) whose watts fit ``budget_w`` (pure)."""

    variants: tuple[str, ...]
    budget_w: float

    def __post_init__(self) -> None:
        _check_variants(self.variants)
        if not math.isfinite(self.budget_w) or self.budget_w <= 0:
            raise ConfigError(f"power budget {self.budget_w} W must be a positive number")

    def decide(self, figures: Mapping[str, VariantPower]) -> PowerDecision:
        """The best variant within budget; else the lowest-drawing one, marked over budget.

        Variants without a figure are passed over (named in ``reason``) unless none has one,
        in which case the best variant serves and the decision says the budget is unchecked.
        """
        known = [figures[v] for v in self.variants if v in figures]
        missing = [v for v in self.variants if v not in figures]
        note = f"; no figure for {', '.join(missing)}" if missing else ""
        if not known:
            return PowerDecision(
                self.variants[0],
                self.budget_w,
                None,
                None,
                "no power figures",
                False,
                "no variant has a power figure; serving the best one unchecked",
            )
        fits = [f for f in known if f.watts <= self.budget_w]
        chosen = fits[0] if fits else min(known, key=lambda f: f.watts)
        verb = "fits" if fits else "exceeds (lowest available)"
        return PowerDecision(
            chosen.variant,
            self.budget_w,
            chosen.watts,
            chosen.basis,
            chosen.source,
            bool(fits),
            f"{chosen.watts:.2f} W ({chosen.basis.value}) {verb} budget {self.budget_w} W{note}",
        )

    def with_reading(
        self, figures: Mapping[str, VariantPower], variant: str, sample: PowerSample
    ) -> dict[str, VariantPower]:
        """``figures`` with ``variant``'s watts replaced by a meter reading taken while it ran.

        A reading without watts (no meter) leaves the figures unchanged.
        """
        updated = dict(figures)
        if sample.watts is not None:
            updated[variant] = VariantPower(
                variant, sample.watts, PowerBasis.MEASURED, sample.source
            )
        return updated


@dataclass(frozen=True, slots=True)
class SwitchStats:
    """A policy holder's state for metrics: the variant now serving and switches so far."""

    policy: str
    variant: str
    switches: int
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "variant": self.variant,
            "switches": self.switches,
            "reason": self.reason,
        }


class LoadSwitch:
    """Holds a :class:`LoadPolicy`'s state; thread-safe; ``observe`` per answered request."""

    def __init__(self, policy: LoadPolicy, clock: Clock = time.monotonic) -> None:
        self.policy = policy
        self._clock = clock
        self._lock = threading.Lock()
        self._state = policy.start(clock())

    def observe(self, queue_ms: float) -> str:
        """Record one request's queue delay; return the variant to serve next."""
        with self._lock:
            self._state = self.policy.observe(self._state, queue_ms, self._clock())
            return self.policy.variant(self._state)

    @property
    def variant(self) -> str:
        """The variant to serve now (closes a window that ended while traffic was idle)."""
        with self._lock:
            self._state = self.policy.tick(self._state, self._clock())
            return self.policy.variant(self._state)

    def stats(self) -> SwitchStats:
        with self._lock:
            s = self._state
        return SwitchStats("load", self.policy.variant(s), s.switches, s.reason)


class PowerSwitch:
    """Holds a :class:`PowerPolicy`'s figures and budget; counts variant switches."""

    def __init__(self, policy: PowerPolicy, figures: Mapping[str, VariantPower]) -> None:
        self.policy = policy
        self._lock = threading.Lock()
        self._figures = dict(figures)
        self._decision = policy.decide(self._figures)
        self._switches = 0

    @property
    def decision(self) -> PowerDecision:
        with self._lock:
            return self._decision

    def set_budget(self, budget_w: float) -> PowerDecision:
        """Change the budget (on battery, a thermal limit) and decide again.

        Raises:
            ConfigError: the budget is not a positive number.
        """
        with self._lock:
            self.policy = replace(self.policy, budget_w=budget_w)
            return self._redecide()

    def record(self, sample: PowerSample) -> PowerDecision:
        """Record a meter reading taken while the current variant served; decide again."""
        with self._lock:
            self._figures = self.policy.with_reading(self._figures, self._decision.variant, sample)
            return self._redecide()

    def _redecide(self) -> PowerDecision:
        decision = self.policy.decide(self._figures)
        if decision.variant != self._decision.variant:
            self._switches += 1
        self._decision = decision
        return decision

    def stats(self) -> SwitchStats:
        with self._lock:
            d, n = self._decision, self._switches
        return SwitchStats("power", d.variant, n, d.reason)
