"""One contract every registered engine passes; engines not installed here are skipped.

The model is the tiny linear classifier of tests/tiny_models.py, converted to each engine's
format; the reference output is computed with numpy from the ONNX file's own weights.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from tests.tiny_models import make_linear_onnx

from edgeloop.core.errors import ConflictError, DataError, MissingDependencyError
from edgeloop.runtime import (
    LoadedModel,
    SessionConfig,
    engine_names,
    engine_statuses,
    get_engine,
    load_model,
)


def _onnx_file(tmp: Path) -> Path:
    return make_linear_onnx(tmp / "linear.onnx")


def _openvino_file(tmp: Path) -> Path:
    ov = pytest.importorskip("openvino")
    xml = tmp / "linear.xml"
    # save_model stores weights as fp16 unless told otherwise; the contract compares to float32.
    ov.save_model(ov.convert_model(str(_onnx_file(tmp))), str(xml), compress_to_fp16=False)
    return xml


def _tflite_file(tmp: Path) -> Path:
    tf = pytest.importorskip("tensorflow", reason="building a .tflite test model needs TensorFlow")
    weights = {
        t.name: numpy_helper.to_array(t) for t in onnx.load(str(_onnx_file(tmp))).graph.initializer
    }

    class Linear(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="input")])
        def __call__(self, x: object) -> object:
            return tf.nn.softmax(tf.matmul(x, weights["W"]) + weights["B"])

    module = Linear()
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [module.__call__.get_concrete_function()], module
    )
    path = tmp / "linear.tflite"
    path.write_bytes(converter.convert())
    return path


BUILDERS: dict[str, Callable[[Path], Path]] = {
    "onnxruntime": _onnx_file,
    "openvino": _openvino_file,
    "litert": _tflite_file,
}


def _reference(x: np.ndarray, onnx_path: Path) -> np.ndarray:
    weights = {
        t.name: numpy_helper.to_array(t) for t in onnx.load(str(onnx_path)).graph.initializer
    }
    logits = x @ weights["W"] + weights["B"]
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return np.asarray(e / e.sum(axis=1, keepdims=True))


@pytest.fixture(params=sorted(BUILDERS))
def case(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[LoadedModel, Path]]:
    engine = get_engine(request.param)
    ok, reason = engine.available()
    if not ok:
        pytest.skip(f"{request.param} not available: {reason}")
    path = BUILDERS[request.param](tmp_path)
    model = load_model(path, SessionConfig(intra_op_threads=1), engine=request.param)
    yield model, tmp_path / "linear.onnx"
    model.close()


def _x(rows: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, 4)).astype(np.float32)


class TestEngineContract:
    def test_reports_engine_provider_threads_and_specs(
        self, case: tuple[LoadedModel, Path]
    ) -> None:
        model, _ = case
        assert model.engine in engine_names()
        assert model.provider
        assert model.threads == 1
        assert len(model.inputs) == 1 and model.inputs[0].shape[-1] == 4
        assert model.inputs[0].dtype == "float32"
        assert model.outputs[0].shape[-1] == 3
        assert model.info.to_dict()["engine"] == model.engine

    @pytest.mark.parametrize("rows", [1, 5])
    def test_outputs_match_the_reference(self, case: tuple[LoadedModel, Path], rows: int) -> None:
        model, onnx_path = case
        x = _x(rows)
        out = model.run({model.inputs[0].name: x})
        assert list(out) == [t.name for t in model.outputs]
        np.testing.assert_allclose(out[model.outputs[0].name], _reference(x, onnx_path), atol=1e-5)

    def test_runs_from_several_threads_at_once(self, case: tuple[LoadedModel, Path]) -> None:
        model, onnx_path = case
        name, out_name = model.inputs[0].name, model.outputs[0].name
        errors: list[str] = []

        def work(seed: int) -> None:
            for _ in range(20):
                x = _x(3, seed)
                got = model.run({name: x})[out_name]
                if not np.allclose(got, _reference(x, onnx_path), atol=1e-5):
                    errors.append(f"thread {seed} got a wrong answer")

        threads = [threading.Thread(target=work, args=(s,)) for s in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []

    def test_wrong_dtype_names_the_tensor(self, case: tuple[LoadedModel, Path]) -> None:
        model, _ = case
        name = model.inputs[0].name
        with pytest.raises(DataError, match=rf"{name}.*float64.*float32"):
            model.run({name: _x(2).astype(np.float64)})

    def test_wrong_shape_names_the_tensor(self, case: tuple[LoadedModel, Path]) -> None:
        model, _ = case
        name = model.inputs[0].name
        with pytest.raises(DataError, match=rf"{name}.*2x5.*\?x4"):
            model.run({name: np.zeros((2, 5), np.float32)})

    def test_unknown_input_names_what_is_expected(self, case: tuple[LoadedModel, Path]) -> None:
        model, _ = case
        with pytest.raises(DataError, match=r"expects inputs \[.+\], got \[nope\]"):
            model.run({"nope": _x(1)})

    def test_closed_model_refuses_to_run(self, case: tuple[LoadedModel, Path]) -> None:
        model, _ = case
        model.close()
        with pytest.raises(ConflictError, match="closed"):
            model.run({model.inputs[0].name: _x(1)})


@pytest.mark.parametrize("name", ["litert", "openvino"])
def test_missing_engine_registers_and_names_its_extra(name: str, linear_path: Path) -> None:
    engine = get_engine(name)
    ok, reason = engine.available()
    if ok:
        pytest.skip(f"{name} is installed here")
    extra = {"litert": "tflite", "openvino": "openvino"}[name]
    assert f"edgeloop[{extra}]" in reason
    status = {s.name: s for s in engine_statuses()}[name]
    assert status.available is False and status.reason == reason
    with pytest.raises(MissingDependencyError) as err:
        engine.load(linear_path, SessionConfig())
    assert err.value.extra == extra
    assert extra in (err.value.hint or "")
