"""A/B splits and shadow copies: which version answers a request, and which one only listens.

Pure decisions. A request with a key (the ``X-Request-Key`` header) always lands on the same arm
of a split: the key is hashed (BLAKE2b) to a point in [0, 1) and the arms own consecutive
intervals as wide as their weights. A request without a key draws the point from a seeded
generator, so the share of each arm converges to its weight and a run can be repeated.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass, field
from typing import Any

from edgeloop.core.errors import ConfigError
from edgeloop.core.types import ModelRef

_HINT = "write MODEL=VERSION:WEIGHT,VERSION:WEIGHT, e.g. --ab cnn=1:90,2:10"


@dataclass(frozen=True, slots=True)
class Split:
    """Versions and their relative weights (any positive scale: 90/10 and 0.9/0.1 agree)."""

    arms: tuple[tuple[str, float], ...]

    def __post_init__(self) -> None:
        if not self.arms:
            raise ConfigError("an A/B split needs at least one version", hint=_HINT)
        versions = [v for v, _ in self.arms]
        if len(set(versions)) != len(versions):
            raise ConfigError(f"an A/B split names a version twice: {versions}", hint=_HINT)
        for version, weight in self.arms:
            if not math.isfinite(weight) or weight <= 0:
                raise ConfigError(
                    f"version {version!r} has weight {weight}; weights must be positive numbers",
                    hint=_HINT,
                )

    @property
    def versions(self) -> tuple[str, ...]:
        return tuple(v for v, _ in self.arms)

    def pick(self, point: float) -> str:
        """The arm owning ``point`` in [0, 1)."""
        total = sum(w for _, w in self.arms)
        edge = 0.0
        for version, weight in self.arms:
            edge += weight / total
            if point < edge:
                return version
        return self.arms[-1][0]  # point within rounding of 1.0

    def to_dict(self) -> dict[str, float]:
        return dict(self.arms)


@dataclass(frozen=True, slots=True)
class Routing:
    """How one model's unversioned requests are answered: a split (or the latest version), and
    an optional shadow version that gets a copy of each request and answers nobody."""

    split: Split | None = None
    shadow: str | None = None

    def versions(self) -> tuple[str, ...]:
        named = self.split.versions if self.split else ()
        return named + ((self.shadow,) if self.shadow else ())

    def to_dict(self) -> dict[str, Any]:
        return {"split": self.split.to_dict() if self.split else None, "shadow": self.shadow}


@dataclass(slots=True)
class Router:
    """Draws points for unkeyed requests; the only state is the seeded generator."""

    seed: int | None = None
    _rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def choose(self, routing: Routing, latest: str, key: str | None) -> str:
        """The version that answers: the split's arm for ``key``, or ``latest`` without a split."""
        if routing.split is None:
            return latest
        point = sticky_point(key) if key else self._rng.random()
        return routing.split.pick(point)


def sticky_point(key: str) -> float:
    """A point in [0, 1) fixed by ``key``: the first 8 bytes of its BLAKE2b digest."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def parse_split(text: str) -> tuple[str, Split]:
    """``"cnn=1:90,2:10"`` -> ``("cnn", Split((("1", 90.0), ("2", 10.0))))``.

    Raises:
        ConfigError: no ``=``, a bad model name, an arm without ``:WEIGHT`` or a bad weight.
    """
    model, arms_text = _model_and_rest(text, "--ab")
    arms = []
    for arm in arms_text.split(","):
        version, sep, weight = arm.strip().partition(":")
        try:
            value = float(weight)
        except ValueError:
            value = math.nan
        if not sep or not version or math.isnan(value):
            raise ConfigError(f"--ab arm {arm.strip()!r} is not VERSION:WEIGHT", hint=_HINT)
        arms.append((version, value))
    return model, Split(tuple(arms))


def parse_shadow(text: str) -> tuple[str, str]:
    """``"cnn=3"`` -> ``("cnn", "3")``.

    Raises:
        ConfigError: no ``=``, a bad model name or an empty version.
    """
    model, version = _model_and_rest(text, "--shadow")
    if not version.strip() or "," in version:
        raise ConfigError(f"--shadow {text!r} must name one version", hint="e.g. --shadow cnn=3")
    return model, version.strip()


def _model_and_rest(text: str, flag: str) -> tuple[str, str]:
    model, sep, rest = text.partition("=")
    if not sep or not rest.strip():
        raise ConfigError(f"{flag} {text!r} has no '=': expected MODEL=...", hint=_HINT)
    return ModelRef(model.strip()).name, rest
