"""Measured watts per variant while serving: one meter interval at a time.

The meter (:func:`edgeloop.bench.power.detect_power_probe`: RAPL or a Jetson INA3221) brackets
intervals of ``power_interval_s``. At the end of each, the reading is recorded for a governed
version's variant only when that interval is clearly the variant's: the same variant served
from start to end, it ran at least once, and no other variant of the version ran. An idle
interval measures the idle machine, and a mixed one two variants, so neither is recorded.

RAPL measures the whole CPU package: with several models under a budget, each one's reading
includes the others' work. A machine without a meter records nothing; the figures stay stated.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edgeloop.serving.served import ServedVersion

if TYPE_CHECKING:
    from edgeloop.bench.power import PowerProbe, PowerReading

Governed = Callable[[], Iterable[ServedVersion]]


@dataclass(frozen=True, slots=True)
class _Mark:
    variant: str
    runs: dict[str, int]


class PowerSampler:
    """Reads ``probe`` every ``interval_s`` and records each clear interval (module docstring)."""

    def __init__(self, probe: PowerProbe, interval_s: float, governed: Governed) -> None:
        self.probe = probe
        self.interval_s = interval_s
        self._governed = governed
        self._marks: dict[ServedVersion, _Mark] = {}
        self._task: asyncio.Task[None] | None = None
        self.last: PowerReading | None = None
        self.recorded = 0

    async def start(self) -> None:
        """Open the first interval and sample in the background."""
        await asyncio.to_thread(self.probe.start)
        self._marks = self._mark()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.sample()

    async def sample(self) -> PowerReading:
        """Close the interval, record it where it is clear, open the next one."""
        reading = await asyncio.to_thread(self.probe.stop)
        await asyncio.to_thread(self.probe.start)
        self.last = reading
        now = self._mark()
        for version, mark in now.items():
            before = self._marks.get(version)
            if before is not None and _clear(before, mark) and version.power is not None:
                version.power.record(reading)
                self.recorded += reading.watts is not None
        self._marks = self._mark()  # a recorded reading may have switched the variant
        return reading

    def _mark(self) -> dict[ServedVersion, _Mark]:
        return {
            v: _Mark(v.power.variant, v.run_counts())
            for v in self._governed()
            if v.power is not None
        }

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
            await asyncio.to_thread(self.probe.stop)


def _clear(before: _Mark, after: _Mark) -> bool:
    """One variant served the whole interval, ran in it, and was the only one that ran."""
    ran = {v for v, n in after.runs.items() if n > before.runs.get(v, 0)}
    return before.variant == after.variant and ran == {after.variant}
