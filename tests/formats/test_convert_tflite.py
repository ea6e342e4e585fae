"""TFLite FP32 / full-INT8 through litert-torch, the TFLM check and the Edge TPU hand-off.

These need the converter environment (``make tflite-env``, or $EDGELOOP_TFLITE_PYTHON); without
it they skip with that reason, and ``make convert-check`` runs them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tests.formats.convert_models import Signed, share_tiny_int8, tiny_source
from torch import nn

from edgeloop.core.errors import ConfigError, ConversionError, EdgeError
from edgeloop.formats.c_array import parse_source
from edgeloop.formats.convert import Converted, ConvertSource, convert
from edgeloop.formats.devices import device
from edgeloop.formats.tflite import converter_python, read_ops

pytestmark = pytest.mark.slow  # litert-torch conversions: ~100 s on two shared cores
pytest.importorskip("ai_edge_litert")
pytest.importorskip("tflite_micro")
try:
    converter_python()
except EdgeError as exc:
    pytest.skip(f"no TFLite converter environment: {exc.hint}", allow_module_level=True)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> ConvertSource:
    return tiny_source(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def outputs(
    source: ConvertSource, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Converted]:
    done = convert(source, ["tflite", "tflm", "edgetpu"], tmp_path_factory.mktemp("out"))
    by_target = {c.target: c for c in done}
    share_tiny_int8(by_target["tflite-int8"].artifact, tmp_path_factory)
    return by_target


def test_fp32_tflite_matches_the_parent(outputs: dict[str, Converted]) -> None:
    fp32 = outputs["tflite"]
    assert fp32.format == "tflite" and fp32.ran_on is not None and fp32.ran_on.startswith("litert")
    assert fp32.parity is not None and fp32.parity.max_abs_diff < 1e-5
    assert fp32.parity.top1_agreement == 1.0


def test_int8_tflite_computes_on_integers_up_to_the_softmax(outputs: dict[str, Converted]) -> None:
    int8 = outputs["tflite-int8"]
    ops = read_ops(int8.artifact)
    # A 1-channel conv lowers to DEPTHWISE_CONV_2D.
    assert {"DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "MAX_POOL_2D"} <= set(ops.ops)
    assert set(ops.float_ops) <= {"DEQUANTIZE", "SOFTMAX"}
    assert int8.parity is not None and int8.parity.max_abs_diff < 0.1
    assert int8.details["calibration_samples"] == 64


def test_tflm_agrees_with_litert_on_every_sample(outputs: dict[str, Converted]) -> None:
    tflm = outputs["tflm"]
    assert tflm.details["tflm_vs_litert"]["top1_agreement"] == 1.0
    assert tflm.details["tflm_vs_litert"]["samples"] == 32
    assert 0 < tflm.details["arena_bytes"] < 64 * 1024
    source, header = tflm.files
    assert parse_source(source.read_text()) == outputs["tflite-int8"].artifact.read_bytes()
    assert f"_ARENA_BYTES {tflm.details['arena_bytes']}" in header.read_text()


def test_edgetpu_handoff_is_the_int8_file_and_not_run(outputs: dict[str, Converted]) -> None:
    tpu = outputs["edgetpu"]
    assert tpu.artifact.read_bytes() == outputs["tflite-int8"].artifact.read_bytes()
    assert tpu.not_run is not None and "edgetpu_compiler tiny.edgetpu-input.tflite" in tpu.not_run
    assert set(tpu.details["ops_left_on_cpu"]) <= {"DEQUANTIZE", "SOFTMAX"}


def test_an_op_tflm_has_no_kernel_for_is_named(tmp_path: Path) -> None:
    signed = tiny_source(tmp_path, Signed().eval())
    with pytest.raises(ConversionError, match="TFLM has no kernel for operator SIGN"):
        convert(signed, ["tflm"], tmp_path / "out")


def test_a_model_too_big_for_a_cortex_m4_is_refused_with_the_shortfall(tmp_path: Path) -> None:
    from edgeloop.pipeline.convert import run_conversion

    torch.manual_seed(0)
    # 64 x 12,000 int8 weights: ~770 KB of flash against the STM32F446RE's 512 KB.
    wide = nn.Sequential(nn.Flatten(), nn.Linear(64, 12_000), nn.ReLU(), nn.Linear(12_000, 3))
    big = tiny_source(tmp_path, nn.Sequential(wide, nn.Softmax(dim=1)).eval())
    with pytest.raises(ConfigError, match=r"tflm of tiny: does not fit stm32-m4: flash needs "):
        run_conversion(big, ["tflm"], tmp_path / "out", runs=1, device=device("stm32-m4"))
    assert (tmp_path / "out" / "tiny.int8.tflite").stat().st_size > 512 * 1024
