"""The machine a benchmark ran on: CPU model, cores, the ISA extensions that matter, memory.

A latency figure means nothing without the machine it was measured on, so every bench report
carries this description. It is read from ``/proc`` (Linux) with :mod:`platform` / :mod:`os`
as the fallback elsewhere.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeloop.core.errors import ConfigError

# Extensions that change which kernels ONNX Runtime / XNNPACK pick (int8 dot products, bf16,
# AMX tiles, NEON dot product and fp16 on ARM). Reported in this order when present.
ISA_OF_INTEREST = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx512_bf16",
    "avx_vnni",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "neon",
    "asimddp",
    "asimdhp",
    "i8mm",
    "bf16",
    "sve",
)

# /proc/cpuinfo keys that name the CPU: x86 ("model name"), ARM boards ("Model" on a Raspberry
# Pi, "Hardware" on older kernels), then the bare "cpu model" some other kernels use.
_MODEL_KEYS = ("model name", "Model", "Hardware", "cpu model")


@dataclass(frozen=True, slots=True)
class Machine:
    """Description of the host; ``physical_cores`` counts cores, not hyper-threads."""

    cpu_model: str
    arch: str
    logical_cores: int
    physical_cores: int
    isa: tuple[str, ...]
    memory_total_mb: float | None
    system: str

    def __post_init__(self) -> None:
        if self.logical_cores < 1 or self.physical_cores < 1:
            raise ConfigError(
                f"machine with {self.logical_cores} logical / {self.physical_cores} physical "
                "cores is not valid; both must be >= 1"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "cpu_model": self.cpu_model,
            "arch": self.arch,
            "logical_cores": self.logical_cores,
            "physical_cores": self.physical_cores,
            "isa": list(self.isa),
            "memory_total_mb": self.memory_total_mb,
            "system": self.system,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Machine:
        mem = d.get("memory_total_mb")
        return cls(
            cpu_model=str(d["cpu_model"]),
            arch=str(d["arch"]),
            logical_cores=int(d["logical_cores"]),
            physical_cores=int(d["physical_cores"]),
            isa=tuple(str(x) for x in d.get("isa") or ()),
            memory_total_mb=None if mem is None else float(mem),
            system=str(d["system"]),
        )


@dataclass(frozen=True, slots=True)
class CpuInfo:
    """What ``/proc/cpuinfo`` says; fields are None / empty when the text does not say."""

    model: str | None
    logical: int
    physical: int | None
    isa: tuple[str, ...]


def parse_cpuinfo(text: str) -> CpuInfo:
    """Parse the text of ``/proc/cpuinfo`` (pure; no I/O)."""
    fields: dict[str, str] = {}
    flags: set[str] = set()
    logical = 0
    cores: set[tuple[str, str]] = set()
    physical_id = core_id = ""
    for line in [*text.splitlines(), ""]:
        key, sep, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if not sep:  # a blank line ends one processor's block
            if core_id:
                cores.add((physical_id, core_id))
            physical_id = core_id = ""
            continue
        fields.setdefault(key, value)
        if key == "processor":
            logical += 1
        elif key == "physical id":
            physical_id = value
        elif key == "core id":
            core_id = value
        elif key in ("flags", "Features"):
            flags.update(value.split())
    if "asimd" in flags:  # aarch64 calls NEON "asimd"
        flags.add("neon")
    model = next((fields[k] for k in _MODEL_KEYS if fields.get(k)), None)
    isa = tuple(f for f in ISA_OF_INTEREST if f in flags)
    return CpuInfo(model=model, logical=logical, physical=len(cores) or None, isa=isa)


def parse_meminfo_mb(text: str) -> float | None:
    """``MemTotal`` from the text of ``/proc/meminfo``, in MiB; None when absent."""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "MemTotal":
            parts = value.split()
            if parts and parts[0].isdigit():
                return int(parts[0]) / 1024.0  # the kernel reports kB (KiB)
    return None


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""  # not Linux, or /proc hidden: fall back to platform / os below


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask), which can be fewer than the host has."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def describe_machine(proc_root: Path = Path("/proc")) -> Machine:
    """Describe this host from ``proc_root`` (``/proc``), falling back to :mod:`platform`."""
    info = parse_cpuinfo(_read(proc_root / "cpuinfo"))
    logical = info.logical or os.cpu_count() or 1
    # Without topology lines (most ARM kernels) cores are not shared: physical == logical.
    physical = min(info.physical or logical, logical)
    model = info.model or platform.processor() or platform.machine() or "unknown CPU"
    memory = parse_meminfo_mb(_read(proc_root / "meminfo"))
    if memory is None and hasattr(os, "sysconf"):
        try:
            memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**2
        except (ValueError, OSError):
            memory = None
    return Machine(
        cpu_model=model,
        arch=platform.machine() or "unknown",
        logical_cores=logical,
        physical_cores=physical,
        isa=info.isa,
        memory_total_mb=memory,
        system=f"{platform.system()} {platform.release()}".strip(),
    )
