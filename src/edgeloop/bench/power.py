"""Power read from a real meter, or ``None`` with the reason: never an estimate.

Two meters exist on the machines edgeloop targets:

- **RAPL** (Intel since Sandy Bridge, AMD since Zen, Linux ``powercap``): a cumulative energy
  counter per package, ``/sys/class/powercap/intel-rapl:N/energy_uj``. Average power over the
  timed runs is (energy after - energy before) / elapsed time; the counter wraps at
  ``max_energy_range_uj``. It measures the whole CPU package, so anything else running on the
  package is counted too.
- **INA3221** (NVIDIA Jetson boards): instantaneous power per rail, sampled on a thread while
  the runs go, averaged. Rails are read from the ``ina3221x`` iio driver (``in_power*_input``,
  milliwatts) or the newer ``ina3221`` hwmon driver (``in*_input`` mV x ``curr*_input`` mA).

:func:`detect_power_probe` picks one, or a :class:`NullProbe` that says why there is none.
"""

from __future__ import annotations

import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeloop.core.errors import ConfigError

Clock = Callable[[], int]  # nanoseconds, monotonic
_PACKAGE_ZONE = re.compile(r"^intel-rapl:\d+$")  # top level only: intel-rapl:0:1 is a subzone


@dataclass(frozen=True, slots=True)
class PowerReading:
    """Average watts over ``seconds``; when ``watts`` is None, ``source`` is the reason."""

    watts: float | None
    source: str
    seconds: float | None = None

    def __post_init__(self) -> None:
        if not self.source:
            raise ConfigError("a power reading needs a source or a reason")
        if self.watts is not None and not self.watts >= 0.0:
            raise ConfigError(f"power {self.watts} W is not a non-negative number")

    def to_dict(self) -> dict[str, Any]:
        return {"power_w": self.watts, "power_source": self.source, "seconds": self.seconds}


class PowerProbe(ABC):
    """Brackets a measured interval: ``start()`` before the timed runs, ``stop()`` after."""

    @abstractmethod
    def start(self) -> None:
        """Begin the interval."""

    @abstractmethod
    def stop(self) -> PowerReading:
        """End the interval and return its average power (or None and the reason)."""


class NullProbe(PowerProbe):
    """No meter: every reading is None with ``reason``."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def start(self) -> None:
        return None

    def stop(self) -> PowerReading:
        return PowerReading(None, self.reason)


@dataclass(frozen=True, slots=True)
class RaplZone:
    """One RAPL package domain: its name, counter file and wrap-around range."""

    name: str
    energy_path: Path
    max_range_uj: int | None


def _read_int(path: Path) -> int:
    return int(path.read_text(encoding="ascii").strip())


def _read_label(path: Path, default: str) -> str:
    return path.read_text(encoding="utf-8").strip() if path.is_file() else default


class _Ticker:
    """Calls ``fn`` every ``interval_s`` on a daemon thread until stopped."""

    def __init__(self, fn: Callable[[], None], interval_s: float, name: str) -> None:
        self._fn = fn
        self._interval_s = interval_s
        self._name = name
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: Exception | None = None

    def start(self) -> None:
        self._done.clear()
        self.error = None
        self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._done.wait(self._interval_s):
            try:
                self._fn()
            except (OSError, ValueError) as exc:  # a sensor vanished mid-run: report, not crash
                self.error = exc
                return

    def stop(self) -> bool:
        """Stop the thread; False when it was not running."""
        if self._thread is None:
            return False
        self._done.set()
        self._thread.join()
        self._thread = None
        return True


def _failure(earlier: Exception | None, last_read: Callable[[], None]) -> Exception | None:
    """The error that spoiled the readings: the sampling thread's, else the final read's."""
    if earlier is not None:
        return earlier
    try:
        last_read()
    except (OSError, ValueError) as exc:
        return exc
    return None


class RaplProbe(PowerProbe):
    """Average package power from RAPL energy counters, summed over packages.

    The counters are polled every ``interval_s`` so that a counter wrapping more than once
    during a long run is still counted right: a 32-bit AMD counter (~65 kJ) wraps after a few
    minutes at full load, far longer than one poll interval.
    """

    def __init__(
        self,
        zones: tuple[RaplZone, ...],
        interval_s: float = 1.0,
        clock: Clock = time.perf_counter_ns,
    ) -> None:
        if not zones:
            raise ConfigError("RaplProbe needs at least one package zone")
        self.zones = zones
        self._clock = clock
        self._ticker = _Ticker(self._poll, interval_s, "rapl-poller")
        self._last: list[int] = []
        self._total_uj = 0
        self._unknown_wrap: Path | None = None
        self._t0 = 0

    def _poll(self) -> None:
        now = [_read_int(z.energy_path) for z in self.zones]
        for zone, before, after in zip(self.zones, self._last, now, strict=True):
            delta = after - before
            if delta < 0:  # the counter wrapped at max_energy_range_uj
                if not zone.max_range_uj:
                    self._unknown_wrap = zone.energy_path
                    continue
                delta += zone.max_range_uj
            self._total_uj += delta
        self._last = now

    def start(self) -> None:
        self._last = [_read_int(z.energy_path) for z in self.zones]
        self._total_uj = 0
        self._unknown_wrap = None
        self._t0 = self._clock()
        self._ticker.start()

    def stop(self) -> PowerReading:
        if not self._ticker.stop():
            raise ConfigError("RaplProbe.stop() called before start()")
        seconds = (self._clock() - self._t0) / 1e9
        failed = _failure(self._ticker.error, self._poll)
        if failed is not None:
            return PowerReading(None, f"reading RAPL counters failed during the run: {failed}")
        names = ", ".join(z.name for z in self.zones)
        if self._unknown_wrap is not None:
            return PowerReading(
                None, f"RAPL counter {self._unknown_wrap} wrapped and its range is unknown", seconds
            )
        if seconds <= 0 or self._total_uj == 0:
            return PowerReading(None, f"RAPL counters ({names}) did not advance", seconds)
        return PowerReading(self._total_uj / 1e6 / seconds, f"rapl ({names})", seconds)


@dataclass(frozen=True, slots=True)
class InaRail:
    """One INA3221 channel: either a power file (mW) or a voltage (mV) and current (mA) file."""

    name: str
    power_path: Path | None = None
    voltage_path: Path | None = None
    current_path: Path | None = None

    def read_mw(self) -> float:
        if self.power_path is not None:
            return float(_read_int(self.power_path))
        if self.voltage_path is None or self.current_path is None:
            raise ConfigError(f"INA rail {self.name!r} has neither a power nor a V/I file")
        return _read_int(self.voltage_path) * _read_int(self.current_path) / 1000.0


class JetsonInaProbe(PowerProbe):
    """Average of INA3221 rail power sampled every ``interval_s`` between start and stop."""

    def __init__(
        self,
        rails: tuple[InaRail, ...],
        interval_s: float = 0.05,
        clock: Clock = time.perf_counter_ns,
    ) -> None:
        if not rails:
            raise ConfigError("JetsonInaProbe needs at least one rail")
        self.rails = rails
        self._clock = clock
        self._ticker = _Ticker(self._sample, interval_s, "ina-sampler")
        self._samples: list[float] = []
        self._t0 = 0

    def _sample(self) -> None:
        self._samples.append(sum(r.read_mw() for r in self.rails) / 1000.0)

    def start(self) -> None:
        self._samples = []
        self._t0 = self._clock()
        self._sample()  # one sample at each end, so even a short interval has two
        self._ticker.start()

    def stop(self) -> PowerReading:
        if not self._ticker.stop():
            raise ConfigError("JetsonInaProbe.stop() called before start()")
        seconds = (self._clock() - self._t0) / 1e9
        failed = _failure(self._ticker.error, self._sample)
        if failed is not None:
            return PowerReading(None, f"reading INA3221 rails failed during the run: {failed}")
        # Samples are equally spaced, so their mean is the time-average power.
        watts = sum(self._samples) / len(self._samples)
        names = ", ".join(r.name for r in self.rails)
        return PowerReading(watts, f"ina3221 ({names}; {len(self._samples)} samples)", seconds)


def _rapl_zones(powercap: Path) -> tuple[list[RaplZone], list[str]]:
    """Package zones under ``powercap``, and the names of top-level zones that were skipped."""
    zones: list[RaplZone] = []
    skipped: list[str] = []
    for zone in sorted(p for p in powercap.iterdir() if _PACKAGE_ZONE.match(p.name)):
        name = _read_label(zone / "name", "")
        # psys (platform) contains the packages, and subzones (core, uncore, dram) are part of
        # their package: summing any of them with the packages would count energy twice.
        if not name.startswith("package"):
            skipped.append(name or zone.name)
            continue
        max_path = zone / "max_energy_range_uj"
        max_range = _read_int(max_path) if max_path.is_file() else None
        zones.append(RaplZone(name, zone / "energy_uj", max_range))
    return zones, skipped


def _rapl_probe(powercap: Path) -> PowerProbe:
    try:
        zones, skipped = _rapl_zones(powercap)
        for zone in zones:  # counters are root-only since Linux 5.10 (CVE-2020-8694)
            _read_int(zone.energy_path)
    except PermissionError as exc:
        return NullProbe(
            f"permission denied reading {exc.filename or powercap} (RAPL counters are root-only "
            "since Linux 5.10; run as root or grant read access to energy_uj)"
        )
    except (OSError, ValueError) as exc:
        return NullProbe(f"RAPL counters under {powercap} are not readable: {exc}")
    if not zones:
        return NullProbe(
            f"RAPL under {powercap} has no package domain (found: {', '.join(skipped) or 'none'})"
        )
    return RaplProbe(tuple(zones))


def _ina_rails(i2c_drivers: Path) -> list[InaRail]:
    rails: list[InaRail] = []
    # JetPack <= 4: ina3221x iio driver, power in mW per channel with a rail_name_N file.
    for power in sorted(i2c_drivers.glob("ina3221x/*/iio:device*/in_power*_input")):
        index = power.name.removeprefix("in_power").removesuffix("_input")
        name = _read_label(power.parent / f"rail_name_{index}", power.name)
        rails.append(InaRail(name, power_path=power))
    # JetPack >= 5: ina3221 hwmon driver, voltage (mV) and current (mA) per channel.
    for volt in sorted(i2c_drivers.glob("ina3221/*/hwmon/hwmon*/in[0-9]_input")):
        index = volt.name.removeprefix("in").removesuffix("_input")
        curr = volt.parent / f"curr{index}_input"
        if curr.is_file():
            name = _read_label(volt.parent / f"in{index}_label", volt.name)
            rails.append(InaRail(name, voltage_path=volt, current_path=curr))
    # A board-input rail (POM_5V_IN, VDD_IN) already contains every other rail.
    total = [r for r in rails if re.search(r"(^|_)IN$", r.name)]
    return total[:1] or rails


def detect_power_probe(sysfs_root: Path = Path("/sys")) -> PowerProbe:
    """The best meter under ``sysfs_root``: RAPL, else Jetson INA3221, else a :class:`NullProbe`.

    Never raises for a missing or unreadable meter; the NullProbe's reason says what was found.
    """
    powercap = sysfs_root / "class" / "powercap"
    if powercap.is_dir() and any(_PACKAGE_ZONE.match(p.name) for p in powercap.iterdir()):
        return _rapl_probe(powercap)
    i2c_drivers = sysfs_root / "bus" / "i2c" / "drivers"
    try:
        rails = _ina_rails(i2c_drivers) if i2c_drivers.is_dir() else []
        for rail in rails:
            rail.read_mw()
    except PermissionError as exc:
        return NullProbe(f"permission denied reading INA3221 sensor {exc.filename}")
    except (OSError, ValueError) as exc:
        return NullProbe(f"INA3221 sensors under {i2c_drivers} are not readable: {exc}")
    if rails:
        return JetsonInaProbe(tuple(rails))
    return NullProbe(
        f"no power meter on this machine: no RAPL zone under {powercap} and no INA3221 sensor "
        f"under {i2c_drivers}"
    )
