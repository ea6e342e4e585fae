"""Presets: static INT8 for conv nets, dynamic for MatMul-heavy ones, the CPU decides the scheme."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from tests.tiny_models import make_linear_onnx

from edgeloop.core.errors import ConfigError, NotFoundError
from edgeloop.optimize import create
from edgeloop.optimize.presets import (
    PRESETS,
    CpuFeatures,
    GraphProfile,
    cpu_features,
    preset,
    profile,
    read_cpu_features,
    recommend,
    recommend_for,
)

VNNI = cpu_features("x86_64", ["avx2", "avx512f", "avx512_vnni"])
OLD_X86 = cpu_features("x86_64", ["avx2", "fma"])
ARM = cpu_features("aarch64", ["asimd", "asimddp"])


def _conv_model(path: Path) -> Path:
    """Two 3x3 convs (16 and 16x16 filters) and a 10-way MatMul head: conv weights dominate."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((16, 1, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.standard_normal((16, 16, 3, 3)).astype(np.float32), "w2"),
        numpy_helper.from_array(rng.standard_normal((16, 10)).astype(np.float32), "wf"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c2"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("MatMul", ["f", "wf"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes,
        "conv",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 1, 8, 8])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["n", 10])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_profile_counts_conv_and_matmul_weights(tmp_path: Path) -> None:
    got = profile(onnx.load(str(_conv_model(tmp_path / "c.onnx"))))
    assert got.conv_weights == 16 * 9 + 16 * 16 * 9
    assert got.matmul_weights == 160
    assert got.ops["Conv"] == 2


def test_conv_net_gets_static_int8_and_the_reason(tmp_path: Path) -> None:
    rec = recommend_for(_conv_model(tmp_path / "c.onnx"), VNNI)
    assert rec.preset.method == "static-int8"
    assert rec.preset.params["format"] == "qdq" and rec.preset.params["per_channel"] is True
    assert "conv net" in rec.reasons and "x86 CPU with VNNI" in rec.reasons
    assert "ConvInteger" in PRESETS["matmul-dynamic"].why  # why the conv net is not dynamic


def test_matmul_net_gets_dynamic_int8(tmp_path: Path) -> None:
    rec = recommend_for(make_linear_onnx(tmp_path / "mlp.onnx"), VNNI)
    assert rec.preset.method == "dynamic-int8"
    assert "MatMul-heavy" in rec.reasons
    assert rec.to_dict()["matmul_weights"] == 12


@pytest.mark.parametrize(
    ("cpu", "name", "reduce_range", "activations"),
    [
        (VNNI, "conv-x86-vnni", False, "uint8"),
        (
            cpu_features("x86_64", ["avx512f", "amx_int8", "amx_tile"]),
            "conv-x86-vnni",
            False,
            "uint8",
        ),
        (OLD_X86, "conv-x86", True, "uint8"),
        (ARM, "conv-arm", False, "int8"),
    ],
)
def test_the_cpu_picks_the_int8_scheme(
    cpu: CpuFeatures, name: str, reduce_range: bool, activations: str
) -> None:
    rec = recommend(GraphProfile(conv_weights=1000, matmul_weights=10), cpu)
    assert rec.preset.name == name
    assert rec.preset.params.get("reduce_range", False) is reduce_range
    assert rec.preset.params["activations"] == activations


def test_every_preset_builds_its_optimizer_and_says_why() -> None:
    for p in PRESETS.values():
        opt = create(p.method, **p.params)
        assert opt.name == p.method
        assert len(p.why) > 40, p.name


def test_cpu_features_from_flags() -> None:
    assert VNNI.vnni and VNNI.avx512 and not VNNI.amx_int8
    assert not OLD_X86.vnni and not OLD_X86.avx512
    assert ARM.arm_dot and not ARM.vnni


def test_read_cpu_features_parses_a_cpuinfo_file(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_vnni amx_int8\n")
    got = read_cpu_features(info)
    assert got.vnni and got.amx_int8 and got.avx512
    assert read_cpu_features(tmp_path / "missing").vnni is False


def test_a_graph_without_weights_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        recommend(GraphProfile(0, 0, {"Relu": 1}), VNNI)
    assert "Relu" in info.value.message and info.value.hint and "fp16" in info.value.hint


def test_unknown_preset_lists_the_known_ones() -> None:
    with pytest.raises(NotFoundError) as info:
        preset("turbo")
    assert "turbo" in info.value.message and "conv-x86-vnni" in info.value.message
    assert preset("size-fp16").method == "fp16"
