"""Budgets and Pareto sets over measured variants (pure functions; no I/O).

A variant row is a measured point: accuracy (higher is better), latency and size (lower is
better), optionally peak RAM. The Pareto set keeps every row that no other row beats on all
three at once; a budget filters rows and, when none passes, says which constraint failed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from edgeloop.core.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Point:
    """One measured variant, reduced to the figures a search compares."""

    recipe: str
    accuracy: float
    latency_ms: float
    size_bytes: int
    ram_mb: float | None = None

    def dominates(self, other: Point) -> bool:
        """At least as good on every axis and strictly better on one."""
        no_worse = (
            self.accuracy >= other.accuracy
            and self.latency_ms <= other.latency_ms
            and self.size_bytes <= other.size_bytes
        )
        better = (
            self.accuracy > other.accuracy
            or self.latency_ms < other.latency_ms
            or self.size_bytes < other.size_bytes
        )
        return no_worse and better


@dataclass(frozen=True, slots=True)
class Budget:
    """What a deployable variant must meet; ``None`` means no limit on that axis."""

    max_latency_ms: float | None = None
    max_size_kb: float | None = None
    min_accuracy: float | None = None
    max_ram_mb: float | None = None

    def __post_init__(self) -> None:
        for name in ("max_latency_ms", "max_size_kb", "max_ram_mb"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"--{name.replace('_', '-')} {value} must be > 0")
        if self.min_accuracy is not None and not 0.0 <= self.min_accuracy <= 1.0:
            raise ConfigError(
                f"--min-accuracy {self.min_accuracy} must be a fraction in [0, 1]",
                hint="write 0.97 for 97 %",
            )

    def violations(self, p: Point) -> list[str]:
        """Human-readable reasons ``p`` misses the budget (empty when it fits)."""
        out: list[str] = []
        if self.max_latency_ms is not None and p.latency_ms > self.max_latency_ms:
            out.append(f"latency {p.latency_ms:.3f} ms > {self.max_latency_ms} ms")
        if self.max_size_kb is not None and p.size_bytes / 1024 > self.max_size_kb:
            out.append(f"size {p.size_bytes / 1024:.1f} KB > {self.max_size_kb} KB")
        if self.min_accuracy is not None and p.accuracy < self.min_accuracy:
            out.append(f"accuracy {p.accuracy:.4f} < {self.min_accuracy}")
        if self.max_ram_mb is not None:
            if p.ram_mb is None:
                out.append("peak RAM was not measured")
            elif p.ram_mb > self.max_ram_mb:
                out.append(f"peak RAM {p.ram_mb:.1f} MB > {self.max_ram_mb} MB")
        return out

    def shortfall(self, p: Point) -> float:
        """How far ``p`` is from the budget, summed as relative excess per axis (0 = fits)."""
        total = 0.0
        if self.max_latency_ms is not None:
            total += max(0.0, p.latency_ms / self.max_latency_ms - 1.0)
        if self.max_size_kb is not None:
            total += max(0.0, p.size_bytes / 1024 / self.max_size_kb - 1.0)
        if self.min_accuracy is not None and self.min_accuracy > 0:
            total += max(0.0, 1.0 - p.accuracy / self.min_accuracy)
        if self.max_ram_mb is not None and p.ram_mb is not None:
            total += max(0.0, p.ram_mb / self.max_ram_mb - 1.0)
        return total


def pareto_front(points: Sequence[Point]) -> list[Point]:
    """Rows no other row dominates, in the input's order (duplicates kept once)."""
    front: list[Point] = []
    for p in points:
        if any(q.dominates(p) for q in points):
            continue
        if any(
            (q.accuracy, q.latency_ms, q.size_bytes) == (p.accuracy, p.latency_ms, p.size_bytes)
            for q in front
        ):
            continue
        front.append(p)
    return front


class Objective(StrEnum):
    """What the search optimizes among variants that meet the budget."""

    ACCURACY = "accuracy"
    LATENCY = "latency"
    SIZE = "size"


def choose(
    points: Sequence[Point], budget: Budget, objective: Objective = Objective.LATENCY
) -> tuple[Point | None, list[Point]]:
    """The best variant within budget by ``objective``, and the candidates that fit.

    Ties break on the other two axes (accuracy first). When nothing fits, returns
    ``(None, [])``; :func:`closest` then says what failed.
    """
    fitting = [p for p in points if not budget.violations(p)]
    if not fitting:
        return None, []
    keys = {
        Objective.ACCURACY: lambda p: (-p.accuracy, p.latency_ms, p.size_bytes),
        Objective.LATENCY: lambda p: (p.latency_ms, -p.accuracy, p.size_bytes),
        Objective.SIZE: lambda p: (p.size_bytes, -p.accuracy, p.latency_ms),
    }
    return min(fitting, key=keys[objective]), fitting


def closest(points: Sequence[Point], budget: Budget, k: int = 3) -> list[Point]:
    """The ``k`` rows nearest to fitting the budget, nearest first."""
    return sorted(points, key=budget.shortfall)[:k]
