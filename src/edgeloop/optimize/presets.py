"""Named expert presets: which quantization a model should get on which CPU, and why.

A preset is a method plus exact parameters plus the reason (Optimum's idea: expert choices as
named, commented values). :func:`recommend` picks one from what the graph computes (its
:class:`GraphProfile`) and what the CPU can do (its :class:`CpuFeatures`); both are pure
values, so the choice is tested without a model file or a particular machine.

The rules, each measured or documented:

- Conv nets get static INT8 (QDQ, per-channel weights). Dynamic INT8 turns Conv into
  ConvInteger and made a small conv net 8x slower than FP32 on this machine's CPU.
- MatMul-heavy nets (MLPs, transformers, RNNs) get dynamic INT8: weights are stored in INT8
  and activations quantized per batch at run time, so no calibration data is needed and
  outliers in activations do not spoil a fixed scale.
- x86 with VNNI (``avx512_vnni`` / ``avx_vnni``; AMX ``amx_int8`` too) multiplies u8 x s8 into
  32-bit sums without saturation, so U8S8 with full 8-bit weights is right. Without VNNI
  the AVX2 path (``vpmaddubsw``) adds pairs of products in 16 bits, which saturates: use
  ``reduce_range`` (7-bit weights), as ONNX Runtime's quantization guide says.
- ARM (``asimddp`` / ``i8mm``) prefers symmetric S8S8.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import onnx

from edgeloop.core.errors import ConfigError, NotFoundError
from edgeloop.formats.onnx_info import inspect_onnx

CONV_OPS = ("Conv", "ConvTranspose")
MATMUL_OPS = ("MatMul", "Gemm", "Attention", "LSTM", "GRU")


@dataclass(frozen=True, slots=True)
class CpuFeatures:
    """The CPU abilities that decide an INT8 scheme (read from the OS's CPU flags)."""

    arch: str
    vnni: bool = False
    amx_int8: bool = False
    avx512: bool = False
    arm_dot: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "arch": self.arch,
            "vnni": self.vnni,
            "amx_int8": self.amx_int8,
            "avx512": self.avx512,
            "arm_dot": self.arm_dot,
        }


def cpu_features(arch: str, flags: Iterable[str]) -> CpuFeatures:
    """Features from an architecture name and CPU flags (``/proc/cpuinfo`` spelling; pure)."""
    have = set(flags)
    return CpuFeatures(
        arch=arch,
        vnni=bool(have & {"avx512_vnni", "avx_vnni", "avx_vnni_int8"}),
        amx_int8="amx_int8" in have,
        avx512="avx512f" in have,
        arm_dot=bool(have & {"asimddp", "i8mm"}),
    )


def read_cpu_features(cpuinfo: Path = Path("/proc/cpuinfo")) -> CpuFeatures:
    """This machine's features; flags are empty where the OS does not publish them."""
    import platform

    flags: list[str] = []
    try:
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("flags", "Features"):
                flags = value.split()
                break
    except OSError:
        pass  # not Linux: no flags, so the conservative x86 preset is chosen
    return cpu_features(platform.machine(), flags)


@dataclass(frozen=True, slots=True)
class Preset:
    """A method with exact parameters, and the reason an expert would choose it."""

    name: str
    method: str
    params: Mapping[str, Any]
    why: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "method": self.method,
            "params": dict(self.params),
            "why": self.why,
        }


def _preset(name: str, method: str, why: str, **params: Any) -> Preset:
    return Preset(name, method, MappingProxyType(params), why)


PRESETS: Mapping[str, Preset] = MappingProxyType(
    {
        p.name: p
        for p in (
            _preset(
                "conv-x86-vnni",
                "static-int8",
                "conv net on x86 with VNNI/AMX: static QDQ (ORT fuses it into QLinearConv), "
                "per-channel weights (conv filters differ in range channel by channel), U8S8 "
                "with full 8-bit weights (VNNI sums u8 x s8 in 32 bits, no saturation)",
                format="qdq",
                per_channel=True,
                activations="uint8",
                weights="int8",
                reduce_range=False,
            ),
            _preset(
                "conv-x86",
                "static-int8",
                "conv net on x86 without VNNI: as conv-x86-vnni but 7-bit weights "
                "(reduce_range), since the AVX2 u8 x s8 path sums pairs in 16 bits and saturates",
                format="qdq",
                per_channel=True,
                activations="uint8",
                weights="int8",
                reduce_range=True,
            ),
            _preset(
                "conv-arm",
                "static-int8",
                "conv net on ARM: symmetric S8S8 QDQ, which ARM's dot-product kernels prefer",
                format="qdq",
                per_channel=True,
                activations="int8",
                weights="int8",
                symmetric_activations=True,
            ),
            _preset(
                "matmul-dynamic",
                "dynamic-int8",
                "MatMul-heavy net: dynamic INT8 (weights INT8, activations scaled per batch at "
                "run time) needs no calibration and suits MatMul; it leaves Conv in float, "
                "because ConvInteger measured 8x slower than FP32",
                weights="int8",
                per_channel=False,
            ),
            _preset(
                "size-fp16",
                "fp16",
                "smaller file only: FP16 halves the weights; CPUs gain no speed from it in ONNX "
                "Runtime, GPUs and NPUs with FP16 units do",
                keep_io_types=True,
            ),
        )
    }
)


def preset(name: str) -> Preset:
    """The preset called ``name``.

    Raises:
        NotFoundError: unknown name (the message lists the known ones).
    """
    if name not in PRESETS:
        raise NotFoundError(
            f"unknown preset {name!r}; known: {', '.join(PRESETS)}",
            hint="leave the preset out to let edgeloop choose from the model and the CPU",
        )
    return PRESETS[name]


@dataclass(frozen=True, slots=True)
class GraphProfile:
    """How many weights feed convolutions and how many feed MatMul-like operators."""

    conv_weights: int
    matmul_weights: int
    ops: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.conv_weights < 0 or self.matmul_weights < 0:
            raise ConfigError(
                f"weight counts must be >= 0: {self.conv_weights}, {self.matmul_weights}"
            )


def profile(model: onnx.ModelProto) -> GraphProfile:
    """Count the weights of ``model``'s conv and MatMul-like nodes (pure)."""
    sizes = {t.name: int(np.prod(t.dims, dtype=np.int64)) for t in model.graph.initializer}
    conv = matmul = 0
    ops: dict[str, int] = {}
    for node in model.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
        weights = sum(sizes.get(name, 0) for name in node.input[1:])
        if node.op_type in CONV_OPS:
            conv += weights
        elif node.op_type in MATMUL_OPS:
            matmul += weights
    return GraphProfile(conv, matmul, ops)


@dataclass(frozen=True, slots=True)
class Recommendation:
    """The chosen preset and the facts that chose it."""

    preset: Preset
    profile: GraphProfile
    cpu: CpuFeatures
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "preset": self.preset.to_dict(),
            "conv_weights": self.profile.conv_weights,
            "matmul_weights": self.profile.matmul_weights,
            "cpu": self.cpu.to_dict(),
            "reasons": list(self.reasons),
        }


def recommend(graph: GraphProfile, cpu: CpuFeatures) -> Recommendation:
    """Pick a preset for a graph on a CPU (pure).

    Raises:
        ConfigError: the graph has no conv or MatMul weights, so no INT8 method applies.
    """
    if graph.conv_weights == 0 and graph.matmul_weights == 0:
        raise ConfigError(
            "the model has no Conv, MatMul or Gemm weights, so INT8 quantization has "
            f"nothing to do (its operators: {', '.join(sorted(graph.ops)) or 'none'})",
            hint="fp16 or graph-opt may still shrink or simplify it",
        )
    share = graph.conv_weights / (graph.conv_weights + graph.matmul_weights)
    weights = f"{share:.0%} of the compute weights feed convolutions"
    if share < 0.5:
        return Recommendation(PRESETS["matmul-dynamic"], graph, cpu, (weights, "MatMul-heavy"))
    if cpu.arch.lower() in ("aarch64", "arm64") or cpu.arm_dot:
        name, cpu_reason = "conv-arm", "ARM CPU"
    elif cpu.vnni or cpu.amx_int8:
        name = "conv-x86-vnni"
        cpu_reason = "x86 CPU with VNNI and AMX" if cpu.amx_int8 else "x86 CPU with VNNI"
    else:
        name, cpu_reason = "conv-x86", "x86 CPU without VNNI"
    return Recommendation(PRESETS[name], graph, cpu, (weights, "conv net", cpu_reason))


def recommend_for(model: Path, cpu: CpuFeatures | None = None) -> Recommendation:
    """:func:`recommend` for the ONNX file ``model`` on ``cpu`` (default: this machine).

    Raises:
        NotFoundError, UntrustedArtifactError: as :func:`edgeloop.formats.inspect_onnx`.
        ConfigError: as :func:`recommend`.
    """
    inspect_onnx(model)  # a user's file: checked before it is parsed in full
    return recommend(profile(onnx.load(str(model))), cpu or read_cpu_features())
