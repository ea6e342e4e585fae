"""Machine description parsed from real /proc text layouts, and read from this host."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edgeloop.bench.machine import (
    Machine,
    describe_machine,
    parse_cpuinfo,
    parse_meminfo_mb,
    usable_cpus,
)
from edgeloop.core.errors import ConfigError

# Two cores with two hyper-threads each, as an Intel /proc/cpuinfo lists them.
X86_HT = "\n\n".join(
    f"processor\t: {cpu}\nvendor_id\t: GenuineIntel\n"
    "model name\t: Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz\n"
    f"physical id\t: 0\ncore id\t\t: {cpu % 2}\n"
    "flags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512_vnni amx_tile amx_int8 foo"
    for cpu in range(4)
)

# A Raspberry Pi 4 (aarch64): no topology lines, NEON called "asimd", the board in "Model".
RPI4 = (
    "\n\n".join(
        f"processor\t: {cpu}\nBogoMIPS\t: 108.00\n"
        "Features\t: fp asimd evtstrm crc32 cpuid\nCPU part\t: 0xd08"
        for cpu in range(4)
    )
    + "\n\nRevision\t: c03114\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n"
)


def test_x86_counts_cores_not_hyperthreads_and_picks_isa() -> None:
    info = parse_cpuinfo(X86_HT)
    assert info.model == "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz"
    assert (info.logical, info.physical) == (4, 2)
    assert info.isa == (
        "sse4_2",
        "avx",
        "avx2",
        "fma",
        "avx512f",
        "avx512_vnni",
        "amx_tile",
        "amx_int8",
    )


def test_arm_board_model_and_neon() -> None:
    info = parse_cpuinfo(RPI4)
    assert info.model == "Raspberry Pi 4 Model B Rev 1.4"
    assert info.logical == 4
    assert info.physical is None  # no topology lines: describe_machine uses logical
    assert info.isa == ("neon",)


def test_describe_machine_from_a_fake_proc(tmp_path: Path) -> None:
    (tmp_path / "cpuinfo").write_text(X86_HT)
    (tmp_path / "meminfo").write_text("MemTotal:        8000000 kB\nMemFree:  100 kB\n")
    machine = describe_machine(tmp_path)
    assert machine.cpu_model.startswith("Intel(R) Xeon(R) Gold 6338")
    assert (machine.logical_cores, machine.physical_cores) == (4, 2)
    assert machine.memory_total_mb == pytest.approx(8000000 / 1024)
    assert Machine.from_dict(machine.to_dict()) == machine


def test_meminfo_without_memtotal() -> None:
    assert parse_meminfo_mb("MemFree: 5 kB\n") is None


def test_this_host() -> None:
    machine = describe_machine()
    assert machine.logical_cores == (os.cpu_count() or machine.logical_cores)
    assert 1 <= machine.physical_cores <= machine.logical_cores
    assert machine.cpu_model
    assert 1 <= usable_cpus() <= machine.logical_cores
    if Path("/proc/meminfo").exists():
        assert machine.memory_total_mb is not None and machine.memory_total_mb > 0


def test_zero_cores_is_rejected() -> None:
    with pytest.raises(ConfigError, match="0 logical"):
        Machine("cpu", "x86_64", 0, 1, (), None, "Linux")
