"""A model made elsewhere (an ONNX file, no torch checkpoint) through every conversion target.

The parent here is exported from a tiny torch model whose module is then dropped, so the
converters see only the ONNX file, as with a model from another framework: onnx2torch rebuilds
it in the converter environment, and each output is compared with the ONNX file itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import torch
from tests.formats.convert_models import inverse_onnx, tiny_source
from torch import nn

from edgeloop.core.errors import ConfigError, ConversionError, EdgeError
from edgeloop.formats import convert as convert_module
from edgeloop.formats.convert import (
    Converted,
    ConvertSource,
    convert,
    exporter,
    for_device,
    why_not,
)
from edgeloop.formats.devices import device
from edgeloop.formats.onnx_torch import missing_onnx2torch, unsupported_ops
from edgeloop.formats.tflite import converter_python

pytest.importorskip("ai_edge_litert")
try:
    converter_python()
except EdgeError as exc:
    pytest.skip(f"no TFLite converter environment: {exc.hint}", allow_module_level=True)
if (_reason := missing_onnx2torch()) is not None:
    pytest.skip(_reason, allow_module_level=True)

EDGELOOP = [sys.executable, "-m", "edgeloop.cli.app"]
# INT8 against the float parent on 32 fixed inputs: at most one top-1 flip (a near tie).
MIN_INT8_TOP1 = 31 / 32


class PooledCnn(nn.Module):
    """Conv -> ReLU -> global mean -> linear -> softmax: the exporter writes ReduceMean at
    opset 18 with its axes as an input, the form onnx2torch alone cannot trace."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 6, 3, padding=1)
        self.fc = nn.Linear(6, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.relu(self.conv(x)).mean(dim=(2, 3))
        return torch.softmax(self.fc(pooled), dim=1)


@pytest.fixture(scope="module")
def foreign(tmp_path_factory: pytest.TempPathFactory) -> ConvertSource:
    source = tiny_source(tmp_path_factory.mktemp("foreign"), PooledCnn().eval(), keep_module=False)
    assert source.module is None
    return source


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One output folder for the module's conversions: the parent rebuilt by onnx2torch (a
    converter-environment run) is kept there and reused by every target that needs it."""
    return tmp_path_factory.mktemp("out")


@pytest.fixture(scope="module")
def outputs(foreign: ConvertSource, out_dir: Path) -> dict[str, Converted]:
    targets = ["tflite", "tflite-int8", "edgetpu", "coreml"]
    if why_not("tflm", has_module=False, onnx=foreign.onnx) is None:
        targets.append("tflm")
    done = convert(foreign, targets, out_dir)
    return {c.target: c for c in done}


@pytest.mark.slow
def test_fp32_tflite_from_a_foreign_onnx_matches_the_onnx(outputs: dict[str, Converted]) -> None:
    fp32 = outputs["tflite"]
    assert fp32.parity is not None and fp32.parity.samples == 32
    assert fp32.parity.max_abs_diff < 1e-5 and fp32.parity.top1_agreement == 1.0
    assert "via onnx2torch" in fp32.details["origin"]["from"]
    assert "onnx2torch" in fp32.tools


@pytest.mark.slow
def test_int8_tflite_from_a_foreign_onnx_is_calibrated_and_close(
    outputs: dict[str, Converted],
) -> None:
    int8 = outputs["tflite-int8"]
    assert int8.details["calibration_samples"] == 64
    assert set(int8.details["float_ops"]) <= {"DEQUANTIZE", "SOFTMAX"}
    assert int8.parity is not None and int8.parity.max_abs_diff < 0.05
    assert int8.parity.top1_agreement is not None
    assert int8.parity.top1_agreement >= MIN_INT8_TOP1


@pytest.mark.slow
def test_tflm_and_edgetpu_follow_from_the_int8_file(outputs: dict[str, Converted]) -> None:
    tpu = outputs["edgetpu"]
    assert tpu.artifact.read_bytes() == outputs["tflite-int8"].artifact.read_bytes()
    assert tpu.not_run is not None and "edgetpu_compiler" in tpu.not_run
    if "tflm" not in outputs:
        pytest.skip("tflite-micro is not installed")
    tflm = outputs["tflm"]
    assert tflm.details["tflm_vs_litert"]["top1_agreement"] == 1.0
    assert tflm.parity is not None and tflm.parity.top1_agreement is not None
    assert tflm.parity.top1_agreement >= MIN_INT8_TOP1


@pytest.mark.slow
def test_coreml_from_a_foreign_onnx_is_validated_not_run(outputs: dict[str, Converted]) -> None:
    coreml = outputs["coreml"]
    assert coreml.not_run is not None and "macOS" in coreml.not_run
    assert coreml.details["inputs"][0]["shape"] == [1, 1, 8, 8]
    assert coreml.details["outputs"][0]["name"] == "output"
    assert "via onnx2torch" in coreml.details["origin"]["from"]


@pytest.mark.slow
def test_tensorrt_from_a_foreign_onnx_at_opset_18_is_re_exported_at_17(
    foreign: ConvertSource, out_dir: Path
) -> None:
    import onnx

    assert [o.version for o in onnx.load(str(foreign.onnx)).opset_import if not o.domain] == [18]
    (trt,) = convert(foreign, ["tensorrt"], out_dir)
    assert [o.version for o in onnx.load(str(trt.artifact)).opset_import if not o.domain] == [17]
    assert "rebuilt by onnx2torch" in trt.details["origin"]
    assert trt.parity is not None and trt.parity.max_abs_diff < 1e-5


def test_an_op_onnx2torch_cannot_convert_is_named_with_what_to_provide(tmp_path: Path) -> None:
    inverse = inverse_onnx(tmp_path / "inverse.onnx")
    assert unsupported_ops(inverse) == ("com.microsoft:Inverse (opset 1)",)
    reason = why_not("tflite-int8", has_module=False, onnx=inverse)
    assert reason is not None and "com.microsoft:Inverse" in reason
    assert "--checkpoint DIR" in reason
    source = ConvertSource(inverse, "inverse", _x(8), _x(4), None, "fixed")
    with pytest.raises(ConversionError, match=r"no converter for: com\.microsoft:Inverse") as err:
        convert(source, ["tflite"], tmp_path / "out")
    assert err.value.hint is not None and "--checkpoint DIR" in err.value.hint


def _no_tflite_converter(monkeypatch: pytest.MonkeyPatch, reason: str) -> None:
    for name in ("tflite", "tflite-int8"):
        patched = replace(exporter(name), missing=lambda: reason)
        monkeypatch.setitem(convert_module._REGISTRY, name, patched)


def test_a_device_falls_back_to_the_next_target_it_lists(
    foreign: ConvertSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_tflite_converter(monkeypatch, "no TFLite converter environment")
    chosen, skipped = for_device(device("rpi4").targets, has_module=False, onnx=foreign.onnx)
    assert chosen == ["openvino"]
    assert skipped == {
        "tflite-int8": "no TFLite converter environment",
        "tflite": "no TFLite converter environment",
    }


def test_a_device_with_nothing_makeable_says_why_for_each(
    foreign: ConvertSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_tflite_converter(monkeypatch, "no converter")
    with pytest.raises(ConfigError, match="edgetpu: it builds on tflite-int8") as err:
        for_device(device("coral-dev-board").targets, has_module=False, onnx=foreign.onnx)
    assert "; tflite-int8: no converter" in err.value.message


@pytest.mark.slow
def test_cli_for_rpi4_converts_a_foreign_onnx(foreign: ConvertSource, tmp_path: Path) -> None:
    data = tmp_path / "samples.npz"  # 80 samples of the model's input shape, 10 classes
    np.savez(data, x=_x(80, (1, 8, 8)), y=np.arange(80) % 10)
    env = {"EDGELOOP_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin", "NO_COLOR": "1"}
    cmd = [*EDGELOOP, "convert", str(foreign.onnx), "--for", "rpi4", "--data", str(data)]
    cmd += ["--runs", "3", "--out", str(tmp_path / "o"), "--format", "json"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, check=False)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    body = json.loads(done.stdout)
    [row] = body["targets"]
    assert row["target"] == "tflite-int8" and row["parity"]["samples"] >= 10
    assert row["parity"]["max_abs_diff"] < 0.05
    assert body["device"]["device"] == "rpi4" and body["device"]["fits"] is True


def _x(n: int, shape: tuple[int, ...] = (3, 3)) -> npt.NDArray[np.float32]:
    return np.random.default_rng(n).random((n, *shape), dtype=np.float32)
