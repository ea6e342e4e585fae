"""Conversion targets that need no separate converter environment: OpenVINO IR, Core ML,
the TensorRT hand-off, C arrays; unsupported ops and missing extras fail with clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from tests.formats.convert_models import inverse_onnx, tiny_source

from edgeloop.core.errors import ConversionError, MissingDependencyError
from edgeloop.formats.c_array import c_identifier, parse_source, write_c_array
from edgeloop.formats.convert import ConvertSource, convert, plan

pytest.importorskip("openvino")
EDGELOOP = [sys.executable, "-m", "edgeloop.cli.app"]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> ConvertSource:
    return tiny_source(tmp_path_factory.mktemp("tiny"))


def test_openvino_ir_runs_on_cpu_and_says_which_precision(
    source: ConvertSource, tmp_path: Path
) -> None:
    (ir,) = convert(source, ["openvino"], tmp_path)
    xml, bin_ = ir.files
    assert xml.suffix == ".xml" and bin_.stat().st_size > 0
    assert ir.details["weights_saved_as"] == "f32"
    assert ir.details["inference_precision"] in ("f32", "bf16", "f16")
    assert ir.details["inference_precision"] in (ir.ran_on or "")
    assert ir.parity is not None and ir.parity.samples == 32
    assert ir.parity.top1_agreement == 1.0
    # bf16 keeps ~3 significant digits; f32 matches to float rounding.
    assert ir.parity.max_abs_diff < (2e-2 if ir.details["inference_precision"] == "bf16" else 1e-4)
    with tarfile.open(ir.artifact) as tar:
        assert sorted(tar.getnames()) == ["tiny.bin", "tiny.xml"]


def test_coreml_package_is_validated_and_recorded_not_run(
    source: ConvertSource, tmp_path: Path
) -> None:
    pytest.importorskip("coremltools")
    (ml,) = convert(source, ["coreml"], tmp_path)
    assert ml.ran_on is None and ml.not_run == "not run: Core ML prediction needs macOS"
    assert ml.parity is None and ml.accuracy is None
    assert ml.details["inputs"][0]["shape"] == [1, 1, 8, 8]
    assert ml.details["outputs"][0]["shape"] == [1, 3]
    assert {"conv", "linear", "max_pool", "softmax"} <= set(ml.details["ops"])
    # 4*9+4 conv and 64*3+3 linear parameters in float16, plus the package's own padding.
    assert ml.details["weight_bytes"] >= (40 + 195) * 2
    assert ml.files[0].suffix == ".mlpackage" and (ml.files[0] / "Manifest.json").is_file()


def test_tensorrt_handoff_is_static_opset_17_and_not_run(
    source: ConvertSource, tmp_path: Path
) -> None:
    import onnx

    (trt,) = convert(source, ["tensorrt"], tmp_path)
    model = onnx.load(str(trt.artifact))
    assert [o.version for o in model.opset_import if o.domain == ""] == [17]
    for vi in list(model.graph.input) + list(model.graph.output):
        assert all(d.dim_value > 0 for d in vi.type.tensor_type.shape.dim), vi.name
    assert trt.not_run is not None and trt.not_run.startswith("not run here")
    assert "trtexec --onnx=tiny.tensorrt.onnx" in trt.not_run
    assert trt.parity is not None and trt.parity.max_abs_diff < 1e-5


def test_tensorrt_from_onnx_alone_above_opset_17_needs_onnx2torch_or_the_checkpoint(
    source: ConvertSource, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        "edgeloop.formats.onnx_torch.missing_onnx2torch", lambda: "onnx2torch is not installed"
    )
    without_torch = ConvertSource(**{**source.__dict__, "module": None})
    with pytest.raises(ConversionError, match="opset 18; the TensorRT hand-off uses opset 17") as e:
        convert(without_torch, ["tensorrt"], tmp_path)
    assert "onnx2torch is not installed" in e.value.message
    assert e.value.hint is not None and "give --checkpoint DIR" in e.value.hint


def test_an_op_openvino_cannot_convert_is_named(tmp_path: Path) -> None:
    model = inverse_onnx(tmp_path / "inverse.onnx")
    x = np.eye(3, dtype=np.float32) * np.arange(1, 5, dtype=np.float32)[:, None, None]
    inv = ConvertSource(model, "inverse", x, x, None, "4 scaled identities")
    with pytest.raises(
        ConversionError, match=r"No conversion rule found for operations: com\.microsoft\.Inverse"
    ):
        convert(inv, ["openvino"], tmp_path / "out")
    with pytest.raises(ConversionError, match=r"standard ONNX domain: com\.microsoft\.Inverse"):
        convert(inv, ["tensorrt"], tmp_path / "out")


def test_torch_targets_without_a_module_or_onnx2torch_say_to_give_the_checkpoint(
    source: ConvertSource, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        "edgeloop.formats.onnx_torch.missing_onnx2torch", lambda: "onnx2torch is not installed"
    )
    without_torch = ConvertSource(**{**source.__dict__, "module": None})
    with pytest.raises(ConversionError, match="onnx2torch is not installed") as err:
        convert(without_torch, ["coreml"], tmp_path)
    assert err.value.hint is not None and "--checkpoint DIR" in err.value.hint


def test_missing_coreml_extra_names_it(
    source: ConvertSource, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "coremltools", None)  # what an absent package looks like
    with pytest.raises(MissingDependencyError) as err:
        convert(source, ["coreml"], tmp_path)
    assert err.value.extra == "coreml"
    assert err.value.hint == "pip install 'edgeloop[coreml]'"


def test_missing_tflite_converter_names_the_extra_and_the_env(
    source: ConvertSource, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EDGELOOP_TFLITE_PYTHON", raising=False)
    monkeypatch.setitem(sys.modules, "litert_torch", None)
    nowhere = [tmp_path / ".venv-tflite" / "bin" / "python"]  # not the checkout's own env
    monkeypatch.setattr("edgeloop.formats.tflite.env_candidates", lambda: nowhere)
    with pytest.raises(MissingDependencyError) as err:
        convert(source, ["tflite-int8"], tmp_path)
    assert err.value.extra == "tflite-convert"
    assert err.value.hint is not None and "make tflite-env" in err.value.hint
    assert str(nowhere[0]) in err.value.hint  # where it looked


def test_tflm_and_edgetpu_build_on_the_int8_model() -> None:
    assert [e.name for e in plan(["tflm", "edgetpu", "tflite-int8"])] == [
        "tflite-int8",
        "tflm",
        "edgetpu",
    ]


def test_c_array_holds_the_exact_bytes_aligned(tmp_path: Path) -> None:
    blob = tmp_path / "m.tflite"
    blob.write_bytes(bytes(range(256)) * 3 + b"\x07")
    c = write_c_array(blob, tmp_path / "c", c_identifier("digits-cnn.int8"), 9992, "test")
    assert c.symbol == "digits_cnn_int8"
    source = c.source.read_text()
    assert "alignas(16) const unsigned char digits_cnn_int8[] = {" in source
    assert parse_source(source) == blob.read_bytes()
    header = c.header.read_text()
    assert "#define DIGITS_CNN_INT8_LEN 769" in header
    assert "#define DIGITS_CNN_INT8_ARENA_BYTES 9992" in header
    assert c_identifier("9lives") == "model_9lives"


def test_cli_converts_to_openvino_and_registers_with_lineage(
    source: ConvertSource, tmp_path: Path
) -> None:
    env = {"EDGELOOP_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin", "NO_COLOR": "1"}
    cmd = [*EDGELOOP, "convert", str(source.onnx)]
    cmd += ["--to", "openvino", "--data", "digits", "--runs", "5", "--out", str(tmp_path / "o")]
    cmd += ["--register", "tiny", "--format", "json"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, check=False)
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    (row,) = body["targets"]
    assert row["target"] == "openvino" and row["registered"] == "tiny-openvino:1"
    assert body["parent_ref"] == "tiny:1"
    engines = [b["engine"] for b in row["bench"]]
    assert engines[1].startswith("openvino (f32, forced)")
    assert body["parent"]["engine"] == "onnxruntime" and body["parent"]["latency_ms"]["p50"] > 0
    assert row["parity"]["samples"] == 269  # the digits test split (seed 0)
    show = subprocess.run(
        [*EDGELOOP, "registry", "show", "tiny-openvino:1", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert show.returncode == 0, show.stderr
    assert '"parent": "tiny:1"' in show.stdout


def test_cli_tensorrt_without_checkpoint_on_opset_18_exits_with_the_conversion_code(
    source: ConvertSource, tmp_path: Path
) -> None:
    env = {"EDGELOOP_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin", "NO_COLOR": "1"}
    env["EDGELOOP_TFLITE_PYTHON"] = sys.executable  # a converter env without onnx2torch
    cmd = [*EDGELOOP, "convert", str(source.onnx)]
    cmd += ["--to", "tensorrt", "--out", str(tmp_path / "o")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, check=False)
    assert done.returncode == 7, done.stderr
    assert "give --checkpoint" in done.stderr
    assert "Traceback" not in done.stderr


def test_cli_for_a_device_picks_its_target_and_reports_the_fit(
    source: ConvertSource, tmp_path: Path
) -> None:
    env = {"EDGELOOP_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin", "NO_COLOR": "1"}
    cmd = [*EDGELOOP, "convert", str(source.onnx), "--for", "x86-gateway", "--runs", "3"]
    cmd += ["--out", str(tmp_path / "o"), "--format", "json"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, check=False)
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert [t["target"] for t in body["targets"]] == ["openvino"]
    fit = body["device"]
    assert fit["device"] == "x86-gateway" and fit["fits"] is True
    assert fit["flash_needed"] == body["targets"][0]["size_bytes"]
    assert fit["ram_available"] == 8 * 1024**3


def test_cli_unknown_target_lists_the_known_ones(source: ConvertSource, tmp_path: Path) -> None:
    env = {"EDGELOOP_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin", "NO_COLOR": "1"}
    cmd = [*EDGELOOP, "convert", str(source.onnx), "--to", "tflite-fp8", "--out", str(tmp_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, check=False)
    assert done.returncode == 4, done.stderr
    assert "'tflite-fp8' is not known; known targets: tflite, tflite-int8, tflm" in done.stderr
