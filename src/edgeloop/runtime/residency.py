"""Residency accounting of the model pool: keys, measured sizes, counters, and the pure
least-recently-used eviction plan (:func:`plan_evictions`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from edgeloop.core.errors import ConfigError

_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True, slots=True, order=True)
class ModelKey:
    """One loadable model: a name and a version (a registry version, or a variant tag)."""

    name: str
    version: str

    def __post_init__(self) -> None:
        for what, value in (("name", self.name), ("version", self.version)):
            if not isinstance(value, str) or not _PART.match(value):
                raise ConfigError(
                    f"model {what} {value!r} is not valid",
                    hint="use 1-128 letters, digits, '.', '_' or '-', starting with one of the "
                    "first two",
                )

    def __str__(self) -> str:
        return f"{self.name}:{self.version}"


class SizeBasis(StrEnum):
    """Where a model's resident size comes from."""

    MEASURED = "measured"  # process RSS change across its last load
    ESTIMATED = "estimated"  # file size x estimate_factor; never loaded yet, or RSS unreadable


@dataclass(frozen=True, slots=True)
class ModelStats:
    """One registered model in the pool, as of a :meth:`ModelPool.stats` call."""

    key: ModelKey
    path: str
    loaded: bool
    refs: int
    size_mb: float
    size_basis: SizeBasis
    size_source: str
    loads: int
    unloads: int
    evictions: int
    load_ms: float | None
    provider: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.key.name,
            "version": self.key.version,
            "path": self.path,
            "loaded": self.loaded,
            "refs": self.refs,
            "size_mb": self.size_mb,
            "size_basis": self.size_basis.value,
            "size_source": self.size_source,
            "loads": self.loads,
            "unloads": self.unloads,
            "evictions": self.evictions,
            "load_ms": self.load_ms,
            "provider": self.provider,
        }


@dataclass(frozen=True, slots=True)
class PoolStats:
    """The pool's counters; ``resident_mb`` sums the sizes of the loaded models.

    ``refused``: loads refused for the budget (OverloadError); ``load_failures``: loads whose
    loader raised (a bad file, a missing engine).
    """

    budget_mb: float | None
    resident_mb: float
    loads: int
    unloads: int
    evictions: int
    refused: int
    load_failures: int
    models: tuple[ModelStats, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "budget_mb": self.budget_mb,
            "resident_mb": self.resident_mb,
            "loads": self.loads,
            "unloads": self.unloads,
            "evictions": self.evictions,
            "refused": self.refused,
            "load_failures": self.load_failures,
            "models": [m.to_dict() for m in self.models],
        }


@dataclass(frozen=True, slots=True)
class Resident:
    """What eviction planning needs to know about one loaded model."""

    key: ModelKey
    size_mb: float
    last_used: int
    refs: int


def plan_evictions(
    residents: list[Resident], need_mb: float, budget_mb: float
) -> list[ModelKey] | None:
    """Idle models to evict, least recently used first, so ``need_mb`` more fits (pure).

    Returns None when even evicting every idle model leaves too little room.
    """
    used = sum(r.size_mb for r in residents)
    victims: list[ModelKey] = []
    for resident in sorted(residents, key=lambda r: r.last_used):
        if used + need_mb <= budget_mb:
            break
        if resident.refs == 0:
            victims.append(resident.key)
            used -= resident.size_mb
    return victims if used + need_mb <= budget_mb else None
