"""What the CLI says is true: ratios that read right either way round, install hints that keep
their brackets, a refusal to overwrite the parent, a failed search that fails, `--to all` that
skips what it cannot make (saying why), and `optimize --list`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from tests.tiny_models import make_linear_onnx
from typer.testing import CliRunner

from edgeloop.cli import app as app_module
from edgeloop.cli.app import app, main
from edgeloop.cli.optimize import ratio_text
from edgeloop.core.errors import ConfigError, ConversionError, MissingDependencyError
from edgeloop.formats import tflite


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("honest")
    make_linear_onnx(root / "linear.onnx")
    _fails_at_run_time(root / "broken.onnx")
    x = np.random.default_rng(0).random((60, 4)).astype(np.float32)
    np.savez(root / "four.npz", x=x, y=np.arange(60) % 3)
    return root


def _fails_at_run_time(path: Path) -> None:
    """A valid graph over [batch, 4] inputs that reshapes them to rows of 3: every run fails."""
    from onnx import TensorProto, helper, numpy_helper, save

    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [-1, 3])
    w = numpy_helper.from_array(np.eye(3, dtype=np.float32), "W")
    graph = helper.make_graph(
        [
            helper.make_node("Reshape", ["input", "shape"], ["rows"]),
            helper.make_node("MatMul", ["rows", "W"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["output"], axis=-1),
        ],
        "broken",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 3])],
        [shape, w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    save(model, str(path))


def test_ratios_say_slower_and_larger_instead_of_a_fraction_faster() -> None:
    assert ratio_text(2.0, 1.0, "faster", "slower") == "2.00x faster"
    assert ratio_text(1.0, 1.1, "faster", "slower") == "1.10x slower"
    assert ratio_text(1000, 1001, "smaller", "larger") == "1.00x larger"
    assert ratio_text(1000, 1000, "smaller", "larger") == "same"
    assert ratio_text(0, 1, "smaller", "larger") == "n/a"


def test_install_hints_keep_their_brackets(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken() -> None:
        raise MissingDependencyError("nncf", "nncf", "NNCF quantization")

    monkeypatch.setattr(app_module, "app", broken)
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == MissingDependencyError.exit_code
    assert "pip install 'edgeloop[nncf]'" in capsys.readouterr().err


def test_optimize_refuses_to_overwrite_its_parent(folder: Path) -> None:
    parent = folder / "linear.onnx"
    before = parent.read_bytes()
    args = ["optimize", str(parent), "--method", "dynamic-int8", "--data", str(folder / "four.npz")]
    result = CliRunner().invoke(app, [*args, "--out", str(folder / "." / "linear.onnx")])
    assert isinstance(result.exception, ConfigError)
    assert "is the parent model itself" in result.exception.message
    assert parent.read_bytes() == before


def test_optimize_lists_its_methods() -> None:
    result = CliRunner().invoke(app, ["optimize", "--list", "--format", "json"])
    assert result.exit_code == 0, result.output
    methods = {row["method"]: row for row in json.loads(result.stdout)["methods"]}
    assert {"static-int8", "dynamic-int8", "fp16", "qat", "prune-structured"} <= set(methods)
    assert methods["static-int8"]["available"] is True


def test_a_tune_where_every_recipe_failed_fails_and_draws_nothing(folder: Path) -> None:
    out = folder / "tune-out"
    args = ["tune", str(folder / "broken.onnx"), "--data", str(folder / "four.npz")]
    args += ["--recipe", "fp16", "--recipe", "dynamic-int8", "--out", str(out), "--runs", "5"]
    result = CliRunner().invoke(app, args)
    assert isinstance(result.exception, ConversionError), result.output
    assert "every recipe failed" in result.exception.message
    assert "fp16:" in result.exception.message and "dynamic-int8:" in result.exception.message
    assert not (out / "pareto.png").exists()
    assert (out / "tune.json").is_file()


def test_convert_all_skips_what_it_cannot_make_and_says_why(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A converter env without onnx2torch (this interpreter): a foreign ONNX then has no route
    # to the torch-based targets, and each is skipped with the reason.
    monkeypatch.setenv("EDGELOOP_TFLITE_PYTHON", sys.executable)
    args = ["convert", str(folder / "linear.onnx"), "--to", "all"]
    args += ["--data", str(folder / "four.npz"), "--out", str(folder / "conv"), "--runs", "5"]
    result = CliRunner().invoke(app, [*args, "--format", "json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    # No checkpoint: the targets that convert from torch are skipped, each with the reason.
    for target in ("tflite", "tflite-int8", "coreml"):
        assert "--checkpoint" in body["skipped"][target]
    assert "tflite-int8" in body["skipped"]["tflm"] and "tflite-int8" in body["skipped"]["edgetpu"]
    made = {row["target"] for row in body["targets"]}
    assert "tensorrt" in made  # opset 17: the hand-off takes the parent as it is
    assert not made & set(body["skipped"])


def test_the_converter_env_is_found_beside_the_virtualenv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo, elsewhere = tmp_path / "repo", tmp_path / "elsewhere"
    python = repo / ".venv-tflite" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("")
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv(tflite.ENV_VAR, raising=False)
    monkeypatch.setattr(sys, "prefix", str(repo / ".venv"))
    if tflite.importlib.util.find_spec("litert_torch") is not None:
        pytest.skip("litert-torch is installed in this environment: it is used first")
    assert tflite.converter_python() == python
    candidates = tflite.env_candidates(package=repo / "src" / "edgeloop")
    assert candidates[0] == elsewhere / ".venv-tflite" / "bin" / "python"
    assert python in candidates


def test_a_converter_env_variable_naming_nothing_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(tflite.ENV_VAR, str(tmp_path / "no-python"))
    with pytest.raises(ConfigError, match="is not a file"):
        tflite.converter_python()
