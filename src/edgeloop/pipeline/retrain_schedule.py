"""When a scheduled retraining is due. Pure, no I/O, no clock of its own.

A schedule is ``{"every": "24h"}``, ``{"at": "02:00"}`` or both. Its slots are the instants
``at + k * every`` (k any whole number) counted in UTC from 1970-01-01T00:00Z, so they do not
depend on when the control plane started: ``every 6h`` is due at 00:00, 06:00, 12:00 and 18:00
UTC; ``at 02:00`` (every 24h) each day at 02:00 UTC; ``every 7d`` on Thursdays at 00:00 UTC
(1970-01-01 was a Thursday). With ``at``, ``every`` must divide a day or be whole days, so the
time of day named is always one of the slots.

:func:`due` is the rule the control loop applies (control/schedule_tick.py): at ``now`` the
latest slot at or before ``now`` is due when it is later than the last slot handled. Slots
missed while the control plane was down coalesce into one job when it comes back, never one
per missed slot; a slot once handled is never due again.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edgeloop.core.errors import ConfigError

DAY_S = 86_400
UNITS = {"s": 1, "m": 60, "h": 3600, "d": DAY_S}
_EVERY = re.compile(r"([1-9][0-9]{0,6})([smhd])")
_AT = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")
EVERY_FORM = "a whole number and a unit s, m, h or d, such as '90m', '24h' or '7d'"
AT_FORM = "a UTC time of day 'HH:MM' from '00:00' to '23:59', such as '02:00'"


def parse_every(text: object) -> int:
    """Seconds of an interval such as ``"24h"``. Raises ConfigError naming the value."""
    match = _EVERY.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ConfigError(
            f"schedule 'every' {text!r} is not an interval; expected {EVERY_FORM}",
            hint='e.g. "schedule": {"every": "24h"}',
        )
    return int(match[1]) * UNITS[match[2]]


def parse_at(text: object) -> int:
    """Seconds after midnight UTC of ``"HH:MM"``. Raises ConfigError naming the value."""
    match = _AT.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ConfigError(
            f"schedule 'at' {text!r} is not a time of day; expected {AT_FORM}",
            hint='e.g. "schedule": {"at": "02:00"}',
        )
    return int(match[1]) * 3600 + int(match[2]) * 60


def interval_text(seconds: int) -> str:
    """The largest whole unit: 86400 -> '1d', 5400 -> '90m'."""
    for unit in ("d", "h", "m"):
        if seconds % UNITS[unit] == 0:
            return f"{seconds // UNITS[unit]}{unit}"
    return f"{seconds}s"


@dataclass(frozen=True, slots=True)
class Schedule:
    """Slots at ``at_s + k * every_s`` seconds of the Unix epoch (see the module doc)."""

    every_s: int = DAY_S
    at_s: int | None = None  # seconds after midnight UTC; None: slots aligned on midnight

    def __post_init__(self) -> None:
        if not (isinstance(self.every_s, int) and self.every_s >= 1):
            raise ConfigError(f"schedule interval {self.every_s!r} s; expected whole seconds >= 1")
        if self.at_s is None:
            return
        if not (isinstance(self.at_s, int) and 0 <= self.at_s < DAY_S):
            raise ConfigError(f"schedule time of day {self.at_s!r} s; expected 0..86399")
        if DAY_S % self.every_s and self.every_s % DAY_S:
            raise ConfigError(
                f"schedule 'every' {interval_text(self.every_s)!r} with 'at' "
                f"{self.to_dict()['at']!r}: the interval neither divides a day nor is "
                "whole days, so that time of day would not recur",
                hint="use an interval such as '6h', '12h', '24h' or '7d', or drop 'at'",
            )

    @classmethod
    def from_dict(cls, doc: object) -> Schedule:
        """``{"every": "24h"}``, ``{"at": "02:00"}`` or both. Raises ConfigError."""
        if not isinstance(doc, Mapping) or not doc:
            raise ConfigError(
                f"a policy's schedule is {doc!r}; expected an object with 'every' and/or 'at'",
                hint='e.g. "schedule": {"every": "24h"} or {"at": "02:00"}',
            )
        if unknown := sorted(set(doc) - {"every", "at"}):
            raise ConfigError(f"schedule fields {unknown} are not known; expected 'every', 'at'")
        every = parse_every(doc["every"]) if "every" in doc else DAY_S
        return cls(every, parse_at(doc["at"]) if "at" in doc else None)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"every": interval_text(self.every_s)}
        if self.at_s is not None:
            out["at"] = f"{self.at_s // 3600:02d}:{self.at_s % 3600 // 60:02d}"
        return out

    @property
    def text(self) -> str:
        """``every 24h`` or ``every 24h at 02:00``: what the control plane stores and logs."""
        d = self.to_dict()
        return f"every {d['every']}" + (f" at {d['at']}" if "at" in d else "")

    def latest(self, now: float) -> int:
        """The latest slot at or before ``now`` (Unix seconds)."""
        anchor = self.at_s or 0
        return anchor + (math.floor(now) - anchor) // self.every_s * self.every_s

    def next_after(self, t: float) -> int:
        """The first slot strictly after ``t``."""
        return self.latest(t) + self.every_s


def due(schedule: Schedule, last: int, now: float) -> int | None:
    """The slot to start a job for at ``now``, given the ``last`` slot handled; None when
    nothing is due (missed slots coalesce into the latest one)."""
    slot = schedule.latest(now)
    return slot if slot > last else None
