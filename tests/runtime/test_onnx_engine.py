"""ONNX Runtime engine: the provider fallback chain, bad files, input specs, config checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from tests.runtime.runtime_models import make_custom_op_onnx

from edgeloop.core.errors import (
    ConfigError,
    ConversionError,
    DataError,
    NotFoundError,
    UntrustedArtifactError,
)
from edgeloop.runtime import (
    DEFAULT_PROVIDERS,
    GraphOptimization,
    SessionConfig,
    engine_for_path,
    get_engine,
    load_model,
)
from edgeloop.runtime.engine import usable_cpus
from edgeloop.runtime.onnx_engine import _create_session, load_with_fallback

CPU = "CPUExecutionProvider"
HAVE = ort.get_available_providers()


def test_missing_cuda_falls_back_to_cpu_and_says_why(linear_path: Path) -> None:
    if "CUDAExecutionProvider" in HAVE:
        pytest.skip("this onnxruntime build has CUDA")
    config = SessionConfig(providers=("CUDAExecutionProvider", CPU), intra_op_threads=1)
    model = load_model(linear_path, config)
    assert model.engine == "onnxruntime"
    assert model.provider == CPU
    assert len(model.fallbacks) == 1
    assert model.fallbacks[0].startswith("CUDAExecutionProvider: not in this onnxruntime build")
    out = model.run({"input": np.ones((2, 4), np.float32)})["output"]
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)


def test_default_chain_records_every_missing_provider_in_order(linear_path: Path) -> None:
    model = load_model(linear_path)
    assert SessionConfig().providers is None
    missing = [p for p in DEFAULT_PROVIDERS if p not in HAVE]
    assert [f.split(":")[0] for f in model.fallbacks] == missing
    assert model.provider == next(p for p in DEFAULT_PROVIDERS if p in HAVE)


def test_cpu_is_appended_when_the_chain_leaves_it_out(linear_path: Path) -> None:
    config = SessionConfig(providers=("CoreMLExecutionProvider",))
    assert config.provider_chain == ("CoreMLExecutionProvider", CPU)
    if "CoreMLExecutionProvider" not in HAVE:
        assert load_model(linear_path, config).provider == CPU


def test_a_provider_that_fails_to_build_falls_to_the_next(linear_path: Path) -> None:
    """The Azure provider is in this build; a session that fails on it must not end the chain."""
    if "AzureExecutionProvider" not in HAVE:
        pytest.skip("needs a second provider in this onnxruntime build")

    def create(path: Path, config: SessionConfig, providers: list[str]) -> Any:
        if providers[0] != CPU:
            raise RuntimeError(f"cannot initialise {providers[0]}")
        return _create_session(path, config, providers)

    config = SessionConfig(providers=("AzureExecutionProvider", CPU))
    model = load_with_fallback(linear_path, config, create)
    assert model.provider == CPU
    assert model.fallbacks == (
        "AzureExecutionProvider: session failed: cannot initialise AzureExecutionProvider",
    )


def test_a_provider_onnxruntime_silently_drops_is_recorded(linear_path: Path) -> None:
    """ONNX Runtime falls back to CPU by itself when, e.g., CUDA libraries are missing."""
    if "AzureExecutionProvider" not in HAVE:
        pytest.skip("needs a second provider in this onnxruntime build")

    def create(path: Path, config: SessionConfig, providers: list[str]) -> Any:
        return _create_session(path, config, [CPU])

    config = SessionConfig(providers=("AzureExecutionProvider", CPU))
    model = load_with_fallback(linear_path, config, create)
    assert model.provider == CPU
    assert model.fallbacks == (
        "AzureExecutionProvider: requested, but onnxruntime fell back to CPUExecutionProvider",
    )


def test_model_no_provider_can_run_is_a_conversion_error(tmp_path: Path) -> None:
    path = make_custom_op_onnx(tmp_path / "custom.onnx")
    with pytest.raises(ConversionError, match=r"custom\.onnx.*CPUExecutionProvider.*Mystery"):
        load_model(path, SessionConfig(providers=(CPU,)))


def test_garbage_file_is_refused_before_onnxruntime_parses_it(tmp_path: Path) -> None:
    path = tmp_path / "garbage.onnx"
    path.write_bytes(b"\x00\xffnot a model" * 10)
    with pytest.raises(UntrustedArtifactError, match=r"garbage\.onnx.*not a readable ONNX"):
        load_model(path)


def test_missing_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match=r"absent\.onnx"):
        load_model(tmp_path / "absent.onnx")


def test_unknown_suffix_lists_the_known_ones(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(b"x")
    with pytest.raises(ConfigError, match=r"'\.pt'.*\.onnx.*\.tflite.*\.xml"):
        load_model(path)


def test_unknown_engine_lists_the_known_ones(linear_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"'tensorrt' is not known.*litert, onnxruntime, openvino"
    ):
        load_model(linear_path, engine="tensorrt")


def test_engine_is_picked_by_suffix() -> None:
    assert engine_for_path("a/b.ONNX").name == "onnxruntime"
    assert engine_for_path("m.tflite").name == "litert"
    assert engine_for_path("m.xml").name == "openvino"
    assert get_engine("onnxruntime").available()[0] is True


def test_input_specs_come_from_the_session(
    linear_path: Path, lookup_path: Path, fixed_path: Path
) -> None:
    linear = load_model(linear_path)
    assert [t.to_dict() for t in linear.inputs] == [
        {"name": "input", "shape": [None, 4], "dtype": "float32"}
    ]
    assert [t.to_dict() for t in load_model(lookup_path).inputs] == [
        {"name": "ids", "shape": [None, 2], "dtype": "int64"}
    ]
    fixed = load_model(fixed_path)
    assert [(t.name, t.shape) for t in fixed.inputs] == [("a", (1, 3)), ("b", (1, 3))]
    assert [t.name for t in fixed.outputs] == ["sum", "prod"]


def test_two_inputs_two_outputs(fixed_path: Path) -> None:
    model = load_model(fixed_path)
    a = np.array([[1, 2, 3]], np.float32)
    b = np.array([[4, 5, 6]], np.float32)
    out = model.run({"b": b, "a": a})
    np.testing.assert_array_equal(out["sum"], a + b)
    np.testing.assert_array_equal(out["prod"], a * b)
    with pytest.raises(DataError, match=r"'a'.*has shape 2x3, expected 1x3"):
        model.run({"a": np.zeros((2, 3), np.float32), "b": b})


def test_a_value_the_engine_refuses_is_a_data_error(lookup_path: Path) -> None:
    model = load_model(lookup_path)
    with pytest.raises(DataError, match=r"lookup\.onnx.*failed on this input.*idx=42"):
        model.run({"ids": np.array([[1, 42]], np.int64)})


def test_threads_are_set_and_reported(linear_path: Path) -> None:
    assert load_model(linear_path, SessionConfig(intra_op_threads=1)).threads == 1
    assert load_model(linear_path).threads == usable_cpus()
    model = load_model(linear_path, SessionConfig(intra_op_threads=2, inter_op_threads=1))
    described = json.loads(json.dumps(model.info.to_dict()))
    assert described["threads"] == 2
    assert described["config"]["inter_op_threads"] == 1
    assert described["provider"] == model.provider


def test_every_optimization_level_loads(linear_path: Path) -> None:
    for level in GraphOptimization:
        config = SessionConfig(graph_optimization=level, intra_op_threads=1)
        assert load_model(linear_path, config).info.config.graph_optimization is level


@pytest.mark.parametrize(
    ("kwargs", "bad"),
    [
        ({"intra_op_threads": 0}, "intra_op_threads=0"),
        ({"inter_op_threads": -1}, "inter_op_threads=-1"),
        ({"providers": ()}, r"providers=\(\)"),
        ({"providers": ("CUDA",)}, "'CUDA'"),
        ({"providers": (CPU, CPU)}, "twice"),
        ({"graph_optimization": "max"}, "'max'"),
        ({"device": ""}, "device"),
    ],
)
def test_bad_session_config_names_the_value(kwargs: dict[str, Any], bad: str) -> None:
    with pytest.raises(ConfigError, match=bad):
        SessionConfig(**kwargs)
