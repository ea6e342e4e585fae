"""The node's own rules for federated training: power state, serving idleness, CPU-time budget.

The node's owner writes ``HOME/agent/fl/policy.json`` (every key optional; the file is read
again before each round, so a change needs no restart)::

    {"train_on_battery": false,        # on battery: decline every round (default)
     "min_battery": 0.5,               # ... or, when true, decline below this charge (0..1)
     "cpu_seconds_per_round": 20.0,    # the training's CPU budget per round (null: none)
     "idle_s": 30.0,                   # train only after this long without an inference
                                       # request on this node (null: whatever the traffic)
     "power_supply": "/sys/class/power_supply"}   # where the kernel shows the power state

The power state is read from the kernel's power-supply class (``type``, ``online``,
``status``, ``capacity`` of each supply): a mains (or USB) supply online means MAINS; a
battery discharging with no supply online means BATTERY with its charge; a machine with no
power supply there (most servers, this project's CI) is UNKNOWN with that reason, and counts
as not on battery. The worker sends the state with every poll (the resource-aware selector
reads it) and declines a training round the policy refuses, with the reason, which the
control plane records as a decline, not a dropout. Idleness is measured by the agent's own
health recorder: the inference requests its server answered (any status) in the last
``idle_s`` seconds. The CPU budget is enforced in the training
worker (:mod:`edgeloop.training.federated_worker`), measured there as the process's user+sys
seconds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeloop.core.errors import ConfigError
from edgeloop.federated.selection import PowerSource

POWER_SUPPLY = Path("/sys/class/power_supply")
_KEYS = {"train_on_battery", "min_battery", "cpu_seconds_per_round", "idle_s", "power_supply"}


@dataclass(frozen=True, slots=True)
class PowerState:
    """What the kernel says now: the source, the battery's charge (0..1) and, when UNKNOWN,
    why."""

    source: PowerSource
    battery: float | None = None
    reason: str | None = None

    def query(self) -> dict[str, str]:
        """The assignment poll's query parameters."""
        out = {"power": self.source.value}
        if self.battery is not None:
            out["battery"] = f"{self.battery:.4f}"
        return out

    def describe(self) -> str:
        charge = "" if self.battery is None else f" at {self.battery:.0%}"
        return f"{self.source.value}{charge}"


@dataclass(frozen=True, slots=True)
class NodePolicy:
    train_on_battery: bool = False
    min_battery: float = 0.5
    cpu_seconds_per_round: float | None = None
    idle_s: float | None = None
    power_supply: Path = POWER_SUPPLY

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_battery <= 1.0:
            raise ConfigError(f"policy min_battery {self.min_battery} is not within [0, 1]")
        cpu = self.cpu_seconds_per_round
        if cpu is not None and not cpu > 0:
            raise ConfigError(
                f"policy cpu_seconds_per_round {cpu} must be > 0",
                hint="null for no budget, e.g. 20.0 for 20 CPU seconds a round",
            )
        if self.idle_s is not None and not self.idle_s > 0:
            raise ConfigError(
                f"policy idle_s {self.idle_s} must be > 0",
                hint="null to train whatever the traffic, e.g. 30 for 30 s without requests",
            )

    def refusal(self, power: PowerState, served: int = 0) -> str | None:
        """Why this node declines a training round now, or None; ``served``: the inference
        requests this node answered in the last ``idle_s`` seconds."""
        if self.idle_s is not None and served > 0:
            return (
                f"serving traffic: {served} inference requests in the last {self.idle_s:g} s; "
                f"the node's policy trains when idle"
            )
        if power.source is not PowerSource.BATTERY:
            return None
        if not self.train_on_battery:
            return f"on battery ({power.describe()}); the node's policy trains on mains only"
        if power.battery is None or power.battery < self.min_battery:
            return (
                f"on battery ({power.describe()}), below the node's policy minimum "
                f"{self.min_battery:.0%}"
            )
        return None


def load_policy(path: Path) -> NodePolicy:
    """The policy in ``path``; the defaults when there is no file.

    Raises:
        ConfigError: the file is not a JSON object of the known keys with valid values.
    """
    try:
        text = path.read_text()
    except FileNotFoundError:
        return NodePolicy()
    except OSError as exc:
        raise ConfigError(f"cannot read the federated policy {str(path)!r}: {exc}") from exc
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"federated policy {str(path)!r} is not JSON: {exc}") from exc
    if not isinstance(doc, dict) or not set(doc) <= _KEYS:
        raise ConfigError(
            f"federated policy {str(path)!r} must be an object of {sorted(_KEYS)}",
            hint='e.g. {"train_on_battery": false, "cpu_seconds_per_round": 20}',
        )
    try:
        cpu, idle = doc.get("cpu_seconds_per_round"), doc.get("idle_s")
        return NodePolicy(
            train_on_battery=_bool(doc.get("train_on_battery", False)),
            min_battery=float(doc.get("min_battery", 0.5)),
            cpu_seconds_per_round=None if cpu is None else float(cpu),
            idle_s=None if idle is None else float(idle),
            power_supply=Path(str(doc.get("power_supply", POWER_SUPPLY))),
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"federated policy {str(path)!r}: {exc}") from exc


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"train_on_battery must be true or false, got {value!r}")
    return value


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def read_power(root: Path = POWER_SUPPLY) -> PowerState:
    """The power state from the kernel's power-supply class under ``root``."""
    try:
        supplies = sorted(p for p in root.iterdir() if (p / "type").is_file())
    except OSError as exc:
        return PowerState(PowerSource.UNKNOWN, None, f"cannot read {root}: {exc.strerror}")
    external, charges, discharging = [], [], False
    for supply in supplies:
        kind = _read(supply / "type")
        if kind == "Battery":
            if _read(supply / "scope") == "Device":  # a mouse's or a phone's, not the node's
                continue
            capacity = _read(supply / "capacity")
            if capacity is not None and capacity.isdigit():
                charges.append(min(int(capacity), 100) / 100.0)
            discharging |= _read(supply / "status") == "Discharging"
        elif (online := _read(supply / "online")) is not None:
            external.append(online == "1")
    battery = sum(charges) / len(charges) if charges else None
    if any(external):
        return PowerState(PowerSource.MAINS, battery)
    if discharging or (external and charges):
        return PowerState(PowerSource.BATTERY, battery)
    if charges:  # charging or full, yet no supply says online: power comes from somewhere
        return PowerState(PowerSource.MAINS, battery)
    return PowerState(PowerSource.UNKNOWN, None, f"no mains or battery supply under {root}")
