"""The power budget in the server: which variant of a model fits ``--power-budget-w`` watts.

Each variant's watts are *stated* (a device profile's figure, ``--variant-power
[MODEL:]VARIANT=WATTS``, never shown as measured) until a power meter measures the variant while
it serves (:mod:`edgeloop.serving.metering`); a measured figure then replaces the stated one.
The decision is the runtime's :class:`~edgeloop.runtime.adaptive.PowerPolicy`: the best variant
(``default`` first, then larger files first) whose watts fit the budget.

With a power budget the power policy picks a model's variant and the load policy is off for
it: two policies moving one choice would undo each other's switches. The budget can change at
runtime (``PUT /v2/models/{m}/power-budget``, e.g. when a battery runs low).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from edgeloop.core.errors import ConfigError
from edgeloop.core.types import ModelRef
from edgeloop.runtime.adaptive import (
    PowerBasis,
    PowerDecision,
    PowerPolicy,
    PowerSample,
    PowerSwitch,
    VariantPower,
)

STATED_SOURCE = "device profile (--variant-power)"
_HINT = "write [MODEL:]VARIANT=WATTS, e.g. --variant-power int8=2.5 or cnn:default=4"


def check_watts(watts: object, what: str) -> float:
    """``watts`` as a positive finite float.

    Raises:
        ConfigError: anything else, naming the value.
    """
    ok = isinstance(watts, int | float) and not isinstance(watts, bool)
    if not ok or not (math.isfinite(float(watts)) and float(watts) > 0):  # type: ignore[arg-type]
        raise ConfigError(
            f"{what} {watts!r} is not a positive number of watts",
            hint="e.g. 3.5 for a 3.5 W budget",
        )
    return float(watts)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class StatedPower:
    """A device profile's watts for a variant, of one model or (``model`` None) of every one."""

    variant: str
    watts: float
    model: str | None = None

    def __post_init__(self) -> None:
        if not self.variant or not math.isfinite(self.watts) or self.watts < 0:
            raise ConfigError(
                f"--variant-power {self.variant!r}={self.watts}: expected a variant name and "
                "non-negative watts",
                hint=_HINT,
            )

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "variant": self.variant, "watts": self.watts}


def parse_variant_power(text: str) -> StatedPower:
    """``"int8=2.5"`` or ``"cnn:int8=2.5"`` -> a :class:`StatedPower`.

    Raises:
        ConfigError: no ``=``, watts that are not a non-negative number, a bad model name.
    """
    target, sep, raw = text.partition("=")
    model, colon, variant = target.strip().rpartition(":")
    try:
        watts = float(raw)
    except ValueError:
        watts = math.nan
    if not sep or not variant or math.isnan(watts):
        raise ConfigError(f"--variant-power {text!r} is not [MODEL:]VARIANT=WATTS", hint=_HINT)
    if watts < 0 or not math.isfinite(watts):
        raise ConfigError(f"--variant-power {text!r}: {raw.strip()} W is negative", hint=_HINT)
    return StatedPower(variant, watts, ModelRef(model).name if colon else None)


class VersionPower:
    """One version's :class:`PowerSwitch` and the figures it decides on (for ``/policy``)."""

    def __init__(self, policy: PowerPolicy, figures: dict[str, VariantPower]) -> None:
        self.switch = PowerSwitch(policy, figures)
        self._figures = dict(figures)
        self._lock = threading.Lock()

    @property
    def variant(self) -> str:
        return self.switch.decision.variant

    def record(self, sample: PowerSample) -> PowerDecision:
        """A meter reading taken while :attr:`variant` served replaces its figure."""
        with self._lock:
            self._figures = self.switch.policy.with_reading(self._figures, self.variant, sample)
            return self.switch.record(sample)

    def to_dict(self) -> dict[str, Any]:
        with self._lock:
            figures = [f.to_dict() for f in self._figures.values()]
        stats = self.switch.stats()
        return {
            "budget_w": self.switch.policy.budget_w,
            "decision": self.switch.decision.to_dict(),
            "figures": figures,
            "switches": stats.switches,
        }


class PowerControl:
    """One model's power budget and its stated figures; makes each version's switch."""

    def __init__(self, model: str, budget_w: float, stated: Sequence[StatedPower]) -> None:
        self.model = model
        self.budget_w = check_watts(budget_w, "--power-budget-w")
        general = {s.variant: s for s in stated if s.model is None}
        own = {s.variant: s for s in stated if s.model == model}
        self.named = frozenset(own)  # variants named for this model must exist
        self.stated = {**general, **own}  # a figure for this model overrides the general one

    def govern(self, where: str, variants: Sequence[str]) -> VersionPower | None:
        """The power switch of a version with ``variants`` (None for a single variant).

        Raises:
            ConfigError: ``--variant-power`` names a variant of this model it does not have.
        """
        missing = sorted(self.named - set(variants))
        if missing:
            raise ConfigError(
                f"--variant-power names variant(s) {missing} of {where}, which has "
                f"{list(variants)}",
                hint="variants are the model.<variant>.onnx files of a version folder",
            )
        if len(variants) < 2:
            return None
        figures = {
            v: VariantPower(v, self.stated[v].watts, PowerBasis.STATED, STATED_SOURCE)
            for v in variants
            if v in self.stated
        }
        return VersionPower(PowerPolicy(tuple(variants), self.budget_w), figures)

    def set_budget(self, watts: object, governed: Iterable[VersionPower]) -> float:
        """A new budget for this model's versions, now and loaded later.

        Raises:
            ConfigError: ``watts`` is not a positive number.
        """
        self.budget_w = check_watts(watts, f"power budget of model {self.model!r}:")
        for power in governed:
            power.switch.set_budget(self.budget_w)
        return self.budget_w
