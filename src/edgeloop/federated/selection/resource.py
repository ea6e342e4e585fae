"""Resource-aware selection: only nodes that can train now, preferring mains power and more data.

Eligibility (from fleet status): online, a device class in ``device_classes`` (empty: any), not
on a battery below ``min_battery``, at least ``min_samples`` local examples, and, when set, a
1-minute load per core of at most ``max_load`` and at least ``min_memory_mb`` available (a
node that does not report the figure is not refused for it). Among the eligible, nodes on
mains power come first (training drains a battery), then larger local data sets (they weigh
more in FedAvg), then the lower load, then node id for a stable order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from edgeloop.core.errors import ConfigError
from edgeloop.federated.selection.base import (
    SELECTORS,
    Candidate,
    Decision,
    PowerSource,
    Selection,
    Why,
    check_request,
)


@dataclass(frozen=True, slots=True)
class ResourceAwareSelector:
    device_classes: frozenset[str] = frozenset()
    min_battery: float = 0.5
    min_samples: int = 1
    max_load: float | None = None
    min_memory_mb: float | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_battery <= 1.0 or self.min_samples < 0:
            raise ConfigError(
                f"min_battery must be in [0, 1] and min_samples >= 0, got {self.min_battery}, "
                f"{self.min_samples}"
            )
        if (self.max_load is not None and not self.max_load > 0) or (
            self.min_memory_mb is not None and self.min_memory_mb < 0
        ):
            raise ConfigError(
                f"max_load must be > 0 and min_memory_mb >= 0, got {self.max_load}, "
                f"{self.min_memory_mb}",
                hint="e.g. max_load=1.5 (1-minute load per core), min_memory_mb=256",
            )

    @property
    def name(self) -> str:
        return "resource"

    def ineligible(self, c: Candidate) -> Decision | None:
        """Why ``c`` cannot train now, or None."""
        if not c.online:
            return Decision(c.node_id, False, Why.OFFLINE)
        if self.device_classes and c.device_class not in self.device_classes:
            return Decision(c.node_id, False, Why.DEVICE_CLASS, c.device_class)
        if c.power is PowerSource.BATTERY and (c.battery is None or c.battery < self.min_battery):
            return Decision(c.node_id, False, Why.LOW_BATTERY, f"battery {c.battery}")
        if c.num_samples < self.min_samples:
            return Decision(c.node_id, False, Why.TOO_LITTLE_DATA, f"{c.num_samples} samples")
        load, memory = c.load_per_core, c.memory_available_mb
        if self.max_load is not None and load is not None and load > self.max_load:
            return Decision(c.node_id, False, Why.BUSY, f"load {load:.2f} per core")
        if self.min_memory_mb is not None and memory is not None and memory < self.min_memory_mb:
            return Decision(c.node_id, False, Why.LOW_MEMORY, f"{memory:.0f} MiB available")
        return None

    def select(self, candidates: Sequence[Candidate], k: int, round: int) -> Selection:
        check_request(candidates, k)
        verdicts = {c.node_id: self.ineligible(c) for c in candidates}
        eligible = [c for c in candidates if verdicts[c.node_id] is None]
        ranked = sorted(eligible, key=_rank_key)
        chosen = tuple(c.node_id for c in ranked[:k])
        rank = {c.node_id: i + 1 for i, c in enumerate(ranked)}
        decisions = []
        for c in candidates:
            refused = verdicts[c.node_id]
            if refused is not None:
                decisions.append(refused)
                continue
            detail = f"rank {rank[c.node_id]} ({describe(c)})"
            why = Why.RANKED_IN if c.node_id in chosen else Why.RANKED_OUT
            decisions.append(Decision(c.node_id, c.node_id in chosen, why, detail))
        return Selection(chosen, tuple(decisions))


def _rank_key(c: Candidate) -> tuple[bool, int, float, str]:
    load = float("inf") if c.load_per_core is None else c.load_per_core
    return (c.power is not PowerSource.MAINS, -c.num_samples, load, c.node_id)


def describe(c: Candidate) -> str:
    """What fleet status said of ``c``, for the round's log."""
    parts = [c.power.value + ("" if c.battery is None else f" {c.battery:.0%}")]
    parts.append(f"{c.num_samples} samples")
    parts.append(c.device_class)
    if c.load_per_core is not None:
        parts.append(f"load {c.load_per_core:.2f}/core")
    if c.memory_available_mb is not None:
        parts.append(f"{c.memory_available_mb:.0f} MiB free")
    return ", ".join(parts)


SELECTORS.register("resource")(ResourceAwareSelector)
