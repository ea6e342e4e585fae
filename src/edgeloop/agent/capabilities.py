"""The capability probe: what this node is, read from the machine, nothing assumed.

Sent at enrollment (docs/fleet-protocol.md); the control plane derives the device class
(``<arch>-<accel>``) from it. CPU model, flags and memory come from ``/proc`` through
:func:`edgeloop.bench.machine.describe_machine`; accelerators from device nodes the kernel
drivers create; engines from the installed packages' metadata (not imported: OpenVINO takes
seconds to import); providers from ONNX Runtime itself; ``train`` (on-device incremental
training, :mod:`edgeloop.agent.train_worker`) from whether ``torch`` can be found, without
importing it (the agent's process never imports torch).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
from pathlib import Path
from typing import Any

from edgeloop.bench.machine import describe_machine

# Device nodes (or driver folders) whose presence shows an accelerator, and its name.
_ACCELERATORS = (
    ("cuda", "/proc/driver/nvidia/gpus", "*"),  # NVIDIA driver: one folder per GPU
    ("cuda", "/dev", "nvidia[0-9]*"),
    ("tegra", "/etc", "nv_tegra_release"),  # Jetson boards
    ("edgetpu", "/dev", "apex_[0-9]*"),  # Coral PCIe Edge TPU
    ("npu", "/dev/accel", "accel[0-9]*"),  # the kernel's compute-accelerator class (Intel NPU)
)
_ENGINE_PACKAGES = {
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino"),
    "openvino": ("openvino",),
    "litert": ("ai-edge-litert", "tflite-runtime"),
}


# Set to 1 to keep training off this node although torch is installed (also how a test starts
# an agent that cannot train): the capability says so, and training jobs are answered with it.
NO_TRAIN_ENV = "EDGELOOP_AGENT_NO_TRAIN"


def training() -> dict[str, Any]:
    """``{"train": bool, "torch": version or None, "train_reason"?}``: whether this node can run the
    incremental-training worker. torch is looked up (``importlib.util.find_spec`` and its
    package metadata), never imported."""
    if os.environ.get(NO_TRAIN_ENV, "").strip() not in ("", "0"):
        why = f"training is turned off on this node ({NO_TRAIN_ENV} is set)"
        return {"train": False, "torch": None, "train_reason": why}
    try:
        found = importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        why = "torch is not installed here (pip install 'edgeloop[train]')"
        return {"train": False, "torch": None, "train_reason": why}
    try:
        version: str | None = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        version = None
    return {"train": True, "torch": version}


def accelerators(root: Path = Path("/")) -> list[str]:
    """Accelerator kinds whose device nodes exist under ``root`` (sorted, unique)."""
    found = set()
    for kind, folder, pattern in _ACCELERATORS:
        base = root / folder.lstrip("/")
        try:
            if any(base.glob(pattern)):
                found.add(kind)
        except OSError:
            continue
    return sorted(found)


def engine_versions() -> dict[str, str | None]:
    """Installed engine package versions (None: not installed)."""
    versions: dict[str, str | None] = {}
    for engine, packages in _ENGINE_PACKAGES.items():
        versions[engine] = None
        for package in packages:
            try:
                versions[engine] = importlib.metadata.version(package)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    return versions


def providers() -> list[str]:
    """ONNX Runtime's execution providers available in this install."""
    try:
        import onnxruntime
    except ImportError:
        return []
    return list(onnxruntime.get_available_providers())


def resources(proc_root: Path = Path("/proc")) -> dict[str, Any]:
    """What the node has free now, for each report: ``MemAvailable`` of ``/proc/meminfo``
    (the kernel's estimate of memory a new workload can take without swapping), in MiB, and
    the 1-minute load average of ``/proc/loadavg``; None with the reason where the kernel does
    not give them."""
    found: dict[str, Any] = {"memory_available_mb": None, "load_1m": None}
    reasons = []
    try:
        text = (proc_root / "meminfo").read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        text, reasons = "", [f"cannot read /proc/meminfo: {exc}"]
    for line in text.splitlines():
        key, _, value = line.partition(":")
        parts = value.split()
        if key.strip() == "MemAvailable" and parts and parts[0].isdigit():
            found["memory_available_mb"] = round(int(parts[0]) / 1024.0, 1)
    if text and found["memory_available_mb"] is None:
        reasons.append("/proc/meminfo has no MemAvailable line")
    try:
        found["load_1m"] = float((proc_root / "loadavg").read_text().split()[0])
    except (OSError, IndexError, ValueError) as exc:
        reasons.append(f"no 1-minute load from /proc/loadavg: {exc}")
    return {**found, "reason": "; ".join(reasons)} if reasons else found


def probe() -> dict[str, Any]:
    """The capability object of the contract (arch, os, cpu, memory, accelerators, engines)."""
    machine = describe_machine()
    return {
        "arch": machine.arch,
        "os": machine.system or platform.system(),
        "cpu_model": machine.cpu_model,
        "cpu_count": machine.logical_cores,
        "cpu_flags": list(machine.isa),
        "memory_mb": None if machine.memory_total_mb is None else round(machine.memory_total_mb),
        "accelerators": accelerators(),
        "engines": engine_versions(),
        "providers": providers(),
        **training(),
    }
