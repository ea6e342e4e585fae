"""A full-integer .tflite answers like its float parent when it is fed floats: the LiteRT engine
quantizes inputs and dequantizes outputs with the tensors' own scale and zero point.

Before, the engine declared the int8 input as is, and a server cast float features into int8
(every value in [0, 1) became 0): a BasicMotions model answered 4 of 12 right, its parent 12.
Needs the TFLite converter environment (``make tflite-env``) to make the INT8 file.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tests.formats.convert_models import samples, tiny_cnn, tiny_int8
from typer.testing import CliRunner

from edgeloop.cli.app import app
from edgeloop.core.errors import EdgeError
from edgeloop.runtime import load_model

torch = pytest.importorskip("torch")
pytest.importorskip("ai_edge_litert")

from edgeloop.formats.onnx_export import export_onnx  # noqa: E402
from edgeloop.formats.tflite import converter_python  # noqa: E402

try:
    converter_python()
except EdgeError as exc:
    pytest.skip(f"no TFLite converter environment: {exc.hint}", allow_module_level=True)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny CNN as ONNX (the parent) and as full-INT8 .tflite, and 32 labelled samples."""
    folder = tmp_path_factory.mktemp("int8")
    module, x = tiny_cnn(), samples(32, 2)
    export_onnx(module, x, folder / "tiny.onnx")
    int8 = tiny_int8(folder, tmp_path_factory)  # made once per run when the formats tests ran
    with torch.inference_mode():
        y = module(torch.from_numpy(x)).numpy().argmax(axis=1).astype(np.int64)
    np.savez(folder / "check.npz", x=x, y=y)
    return {
        "onnx": folder / "tiny.onnx",
        "int8": int8,
        "data": folder / "check.npz",
    }


def test_int8_tflite_takes_floats_and_agrees_with_its_parent(models: dict[str, Path]) -> None:
    parent, int8 = load_model(models["onnx"]), load_model(models["int8"])
    # The file's input is int8 with a scale; the engine declares the floats it stands for.
    assert [s.dtype for s in int8.inputs] == ["float32"]
    assert [s.dtype for s in int8.outputs] == ["float32"]
    x = samples(32, 2)
    top1 = []
    for model in (parent, int8):
        name, out = model.inputs[0].name, model.outputs[0].name
        top1.append([int(model.run({name: s[None]})[out].argmax()) for s in x])
    assert top1[0] == top1[1]


def test_each_engine_names_its_platform(models: dict[str, Path]) -> None:
    assert load_model(models["onnx"]).info.platform == "onnxruntime_onnx"
    assert load_model(models["int8"]).info.platform == "litert_tflite"


def test_bench_measures_the_int8_tflite_with_its_accuracy(models: dict[str, Path]) -> None:
    rows = {}
    for kind in ("onnx", "int8"):
        args = ["bench", str(models[kind]), "--data", str(models["data"]), "--split", "all"]
        args += ["--runs", "5", "--warmup", "1", "--no-isolate", "--format", "json"]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        rows[kind] = json.loads(result.stdout)
    assert rows["int8"]["engine"] == "litert"
    assert rows["int8"]["size_bytes"] == models["int8"].stat().st_size
    # Labels are the parent's own top-1, so the parent scores 1.0 and the INT8 file must too.
    assert rows["onnx"]["accuracy"] == 1.0
    assert rows["int8"]["accuracy"] == 1.0
