from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeloop.core.errors import ConfigError
from edgeloop.core.types import (
    Latency,
    Manifest,
    Measurement,
    ModelRef,
    Parity,
    TensorSpec,
    shape_str,
)


def test_model_ref_parses_name_and_version() -> None:
    assert ModelRef.parse("digits-cnn:3") == ModelRef("digits-cnn", 3)
    assert ModelRef.parse("digits-cnn") == ModelRef("digits-cnn", None)
    assert ModelRef.parse("digits-cnn:latest").version is None
    assert str(ModelRef("m", 2)) == "m:2"


def test_model_ref_reports_every_problem_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        ModelRef.parse("../evil:zero")
    message = str(info.value)
    assert "'../evil'" in message and "'zero'" in message
    assert "NAME:VERSION" in message


@pytest.mark.parametrize("text", ["", ":3", "a:0", "a:-1", "a b:1", "-x:1"])
def test_model_ref_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match="not valid"):
        ModelRef.parse(text)


@given(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True), st.integers(1, 10**6))
def test_model_ref_round_trips(name: str, version: int) -> None:
    ref = ModelRef(name, version)
    assert ModelRef.parse(str(ref)) == ref


def test_tensor_spec_validates() -> None:
    assert shape_str(TensorSpec("x", (None, 1, 8, 8)).shape) == "?x1x8x8"
    with pytest.raises(ConfigError, match="complex64"):
        TensorSpec("x", (1,), "complex64")
    with pytest.raises(ConfigError, match=r"\[0\]"):
        TensorSpec("x", (None, 0))


def _measurement(**over: object) -> Measurement:
    base: dict[str, object] = dict(
        model="m.onnx",
        engine="onnxruntime",
        provider="CPUExecutionProvider",
        batch_size=1,
        runs=10,
        latency_ms=Latency(1.0, 1.5, 2.0),
        throughput_per_s=900.0,
        peak_rss_mb=80.0,
        size_bytes=1234,
        accuracy=0.98,
        accuracy_split="digits test",
        power_w=None,
        power_source="no meter",
        cpu="cpu",
        threads=2,
    )
    base.update(over)
    return Measurement(**base)  # type: ignore[arg-type]


def test_measurement_validates() -> None:
    with pytest.raises(ConfigError, match="outside"):
        _measurement(accuracy=1.5)
    with pytest.raises(ConfigError, match="together"):
        _measurement(accuracy_split=None)
    with pytest.raises(ConfigError, match="out of order"):
        Latency(3.0, 2.0, 1.0)


def test_manifest_round_trips_through_json_dict() -> None:
    manifest = Manifest(
        name="digits-cnn",
        format="onnx",
        inputs=(TensorSpec("input", (None, 1, 8, 8)),),
        outputs=(TensorSpec("output", (None, 10)),),
        source_data_hash="ab" * 32,
        dataset="digits",
        recipe={"arch": {"arch": "cnn"}},
        parity=Parity(1e-6, 1.0, 270, "digits test"),
        measurements=(_measurement(),),
        metrics={"test_accuracy": 0.98},
        tools={"onnx": "1.23"},
        parent=ModelRef("digits-cnn", 1),
    )
    assert Manifest.from_dict(manifest.to_dict()) == manifest


def test_manifest_rejects_unknown_format() -> None:
    with pytest.raises(ConfigError, match="'pkl'"):
        Manifest("m", "pkl", (TensorSpec("i", (1,)),), (TensorSpec("o", (1,)),))
