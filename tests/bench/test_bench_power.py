"""Power probes on fake sysfs trees laid out like the kernel's, with counters the tests advance."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from edgeloop.bench.power import (
    JetsonInaProbe,
    NullProbe,
    RaplProbe,
    detect_power_probe,
)
from edgeloop.core.errors import ConfigError

MAX_RANGE_UJ = 262_143_328_850  # what an Intel package reports


def _write(path: Path, value: object) -> None:
    """Replace a counter file atomically, as the kernel's reads are: no half-written value."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{value}\n")
    tmp.replace(path)


def make_rapl(root: Path, zones: dict[str, tuple[str, int]], max_range: int = MAX_RANGE_UJ) -> Path:
    """``zones`` maps a powercap folder (``intel-rapl:0``) to (name, energy_uj)."""
    powercap = root / "class" / "powercap"
    (powercap / "intel-rapl").mkdir(parents=True)  # the control-type folder the kernel adds
    for folder, (name, energy) in zones.items():
        _write(powercap / folder / "name", name)
        _write(powercap / folder / "energy_uj", energy)
        _write(powercap / folder / "max_energy_range_uj", max_range)
    return powercap


class FakeClock:
    """Nanoseconds that advance only when the test says so."""

    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


def test_rapl_watts_from_a_known_energy_delta_over_a_known_interval(tmp_path: Path) -> None:
    powercap = make_rapl(tmp_path, {"intel-rapl:0": ("package-0", 1_000_000)})
    probe = detect_power_probe(tmp_path)
    assert isinstance(probe, RaplProbe)
    clock = FakeClock()
    exact = RaplProbe(probe.zones, clock=clock)
    exact.start()
    _write(powercap / "intel-rapl:0" / "energy_uj", 1_000_000 + 30_000_000)  # +30 J
    clock.now = 2_000_000_000  # 2 s
    reading = exact.stop()
    assert reading.watts == pytest.approx(15.0)
    assert reading.seconds == pytest.approx(2.0)
    assert reading.source == "rapl (package-0)"


def test_rapl_on_the_real_clock(tmp_path: Path) -> None:
    powercap = make_rapl(tmp_path, {"intel-rapl:0": ("package-0", 5)})
    probe = detect_power_probe(tmp_path)
    probe.start()
    _write(powercap / "intel-rapl:0" / "energy_uj", 5 + 5_000_000)  # +5 J
    time.sleep(0.2)
    reading = probe.stop()
    assert reading.seconds is not None and 0.2 <= reading.seconds < 10
    assert reading.watts == pytest.approx(5.0 / reading.seconds)
    assert reading.watts is not None and reading.watts <= 25.0


def test_rapl_counts_packages_once_not_subzones_or_psys(tmp_path: Path) -> None:
    powercap = make_rapl(
        tmp_path,
        {
            "intel-rapl:0": ("package-0", 0),
            "intel-rapl:0:0": ("core", 0),
            "intel-rapl:0:1": ("dram", 0),
            "intel-rapl:1": ("package-1", 0),
            "intel-rapl:2": ("psys", 0),
        },
    )
    probe = detect_power_probe(tmp_path)
    assert isinstance(probe, RaplProbe)
    assert [z.name for z in probe.zones] == ["package-0", "package-1"]
    clock = FakeClock()
    exact = RaplProbe(probe.zones, clock=clock)
    exact.start()
    for folder in ("intel-rapl:0", "intel-rapl:0:0", "intel-rapl:0:1", "intel-rapl:2"):
        _write(powercap / folder / "energy_uj", 4_000_000)
    _write(powercap / "intel-rapl:1" / "energy_uj", 6_000_000)
    clock.now = 1_000_000_000
    assert exact.stop().watts == pytest.approx(10.0)  # 4 J + 6 J in 1 s; subzones/psys ignored


def test_rapl_counter_wraparound(tmp_path: Path) -> None:
    powercap = make_rapl(tmp_path, {"intel-rapl:0": ("package-0", 900_000)}, max_range=1_000_000)
    probe = detect_power_probe(tmp_path)
    assert isinstance(probe, RaplProbe)
    clock = FakeClock()
    exact = RaplProbe(probe.zones, clock=clock)
    exact.start()
    _write(powercap / "intel-rapl:0" / "energy_uj", 100_000)  # wrapped: 100 k + 100 k uJ
    clock.now = 1_000_000_000
    assert exact.stop().watts == pytest.approx(0.2)


def test_rapl_counter_wrapping_twice_is_caught_by_polling(tmp_path: Path) -> None:
    powercap = make_rapl(tmp_path, {"intel-rapl:0": ("package-0", 900_000)}, max_range=1_000_000)
    zones = detect_power_probe(tmp_path)
    assert isinstance(zones, RaplProbe)
    clock = FakeClock()
    probe = RaplProbe(zones.zones, interval_s=0.01, clock=clock)
    probe.start()
    energy = powercap / "intel-rapl:0" / "energy_uj"
    _write(energy, 500_000)  # wrap 1: +600 k
    # Until the poller has read this value (its last reading; a loaded machine may keep the
    # thread waiting far longer than a few poll intervals).
    deadline = time.monotonic() + 60
    while probe._last != [500_000]:
        assert time.monotonic() < deadline, "the poller never read the counter"
        time.sleep(0.005)
    _write(energy, 100_000)  # wrap 2: +600 k
    clock.now = 1_000_000_000
    assert probe.stop().watts == pytest.approx(1.2)


def test_rapl_that_does_not_advance_is_none_with_reason(tmp_path: Path) -> None:
    make_rapl(tmp_path, {"intel-rapl:0": ("package-0", 42)})
    probe = detect_power_probe(tmp_path)
    probe.start()
    reading = probe.stop()
    assert reading.watts is None
    assert "did not advance" in reading.source


def test_rapl_without_a_package_domain_is_none_with_reason(tmp_path: Path) -> None:
    make_rapl(tmp_path, {"intel-rapl:0": ("psys", 1)})
    probe = detect_power_probe(tmp_path)
    assert isinstance(probe, NullProbe)
    assert "no package domain" in probe.reason and "psys" in probe.reason


@contextmanager
def _unprivileged() -> Iterator[None]:
    """Drop root's read-anything right for a moment: as root a mode-000 file stays readable."""
    if os.geteuid() != 0:
        yield
        return
    os.seteuid(65534)  # nobody; the real uid stays root, so it can be restored
    try:
        yield
    finally:
        os.seteuid(0)


def test_permission_denied_is_none_with_reason() -> None:
    # In a world-traversable folder so the unprivileged user reaches the counter file itself.
    root = Path(tempfile.mkdtemp(prefix="edgeloop-rapl-"))
    try:
        root.chmod(0o755)
        make_rapl(root, {"intel-rapl:0": ("package-0", 1)})
        for path in root.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        counter = root / "class" / "powercap" / "intel-rapl:0" / "energy_uj"
        counter.chmod(0o000)
        with _unprivileged():
            probe = detect_power_probe(root)
        assert isinstance(probe, NullProbe)
        assert "permission denied" in probe.reason
        assert str(counter) in probe.reason
        assert probe.stop().watts is None
    finally:
        shutil.rmtree(root)


def _ina_iio(root: Path, rails: dict[int, tuple[str, int]]) -> Path:
    device = root / "bus" / "i2c" / "drivers" / "ina3221x" / "6-0040" / "iio:device0"
    for index, (name, milliwatts) in rails.items():
        _write(device / f"rail_name_{index}", name)
        _write(device / f"in_power{index}_input", milliwatts)
    return device


def test_jetson_ina_iio_uses_the_board_input_rail(tmp_path: Path) -> None:
    _ina_iio(tmp_path, {0: ("POM_5V_IN", 5000), 1: ("POM_5V_GPU", 1000), 2: ("POM_5V_CPU", 1500)})
    probe = detect_power_probe(tmp_path)
    assert isinstance(probe, JetsonInaProbe)
    assert [r.name for r in probe.rails] == ["POM_5V_IN"]  # it already contains GPU and CPU
    probe.start()
    time.sleep(0.05)
    reading = probe.stop()
    assert reading.watts == pytest.approx(5.0)
    assert reading.source.startswith("ina3221 (POM_5V_IN")


def test_jetson_ina_averages_samples_over_the_run(tmp_path: Path) -> None:
    device = _ina_iio(tmp_path, {0: ("VDD_IN", 4000)})
    probe = detect_power_probe(tmp_path)
    assert isinstance(probe, JetsonInaProbe)
    fast = JetsonInaProbe(probe.rails, interval_s=0.01)
    fast.start()
    time.sleep(0.15)
    _write(device / "in_power0_input", 6000)
    time.sleep(0.15)
    reading = fast.stop()
    assert reading.watts is not None and 4.0 < reading.watts < 6.0


def test_jetson_ina_hwmon_sums_rails_without_a_board_input(tmp_path: Path) -> None:
    hwmon = tmp_path / "bus" / "i2c" / "drivers" / "ina3221" / "1-0040" / "hwmon" / "hwmon3"
    for index, (label, mv, ma) in {
        1: ("VDD_GPU_SOC", 5000, 800),
        2: ("VDD_CPU_CV", 5000, 400),
    }.items():
        _write(hwmon / f"in{index}_label", label)
        _write(hwmon / f"in{index}_input", mv)
        _write(hwmon / f"curr{index}_input", ma)
    probe = detect_power_probe(tmp_path)
    assert isinstance(probe, JetsonInaProbe)
    probe.start()
    reading = probe.stop()
    assert reading.watts == pytest.approx(4.0 + 2.0)


def test_sensor_that_vanishes_mid_run_is_none_with_reason(tmp_path: Path) -> None:
    device = _ina_iio(tmp_path, {0: ("VDD_IN", 4000)})
    probe = detect_power_probe(tmp_path)
    assert isinstance(probe, JetsonInaProbe)
    probe.start()
    (device / "in_power0_input").unlink()
    reading = probe.stop()
    assert reading.watts is None
    assert "in_power0_input" in reading.source


def test_no_meter_in_an_empty_tree(tmp_path: Path) -> None:
    probe = detect_power_probe(tmp_path)
    assert isinstance(probe, NullProbe)
    assert str(tmp_path / "class" / "powercap") in probe.reason
    probe.start()
    assert probe.stop().watts is None


@pytest.mark.skipif(Path("/sys/class/powercap").exists(), reason="this machine has a powercap tree")
def test_this_machine_reports_no_meter_and_why() -> None:
    reading = detect_power_probe().stop()
    assert reading.watts is None
    assert "/sys/class/powercap" in reading.source


def test_stop_before_start_is_a_config_error(tmp_path: Path) -> None:
    make_rapl(tmp_path, {"intel-rapl:0": ("package-0", 1)})
    with pytest.raises(ConfigError, match="before start"):
        detect_power_probe(tmp_path).stop()
