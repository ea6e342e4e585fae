"""OpenVINO and LiteRT specifics beyond the shared contract (skipped where not installed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeloop.core.errors import UntrustedArtifactError
from edgeloop.runtime import SessionConfig, get_engine, load_model
from edgeloop.runtime.openvino_engine import _pick_device


def test_openvino_device_missing_here_falls_back_to_cpu_with_the_reason() -> None:
    assert _pick_device("GPU", ["CPU"]) == ("CPU", ("GPU: not among OpenVINO devices (CPU)",))
    assert _pick_device("CPU", ["CPU"]) == ("CPU", ())
    assert _pick_device("AUTO:GPU,CPU", ["CPU"]) == ("AUTO:GPU,CPU", ())


def test_openvino_reports_the_device_it_fell_back_to(linear_path: Path) -> None:
    ok, reason = get_engine("openvino").available()
    if not ok:
        pytest.skip(reason)
    model = load_model(linear_path, SessionConfig(device="NPU", intra_op_threads=1), "openvino")
    if model.provider == "openvino:NPU":
        pytest.skip("this machine has an NPU")
    assert model.provider == "openvino:CPU"
    assert model.fallbacks[0].startswith("NPU: not among OpenVINO devices")


def test_openvino_refuses_a_broken_ir(tmp_path: Path) -> None:
    ok, reason = get_engine("openvino").available()
    if not ok:
        pytest.skip(reason)
    xml = tmp_path / "broken.xml"
    xml.write_text("<net name='x'><layers><layer id='0'")
    with pytest.raises(UntrustedArtifactError, match=r"broken\.xml"):
        load_model(xml)


def test_litert_refuses_a_broken_file(tmp_path: Path) -> None:
    ok, reason = get_engine("litert").available()
    if not ok:
        pytest.skip(reason)
    path = tmp_path / "broken.tflite"
    path.write_bytes(b"TFL3 but not really")
    with pytest.raises(UntrustedArtifactError, match=r"broken\.tflite"):
        load_model(path)
