"""Every CLI command, fed bad arguments, answers with a clear error and never a traceback.

Each case runs in this process through Typer's CliRunner, the way ``edgeloop`` runs it: an
EdgeError that escapes the app is what ``cli.app.main`` turns into a message and its exit code,
so it counts as a clean answer (its message must carry no raw ANSI escapes); anything else that
escapes is a traceback a user would see. Exit codes must come from the error tree (or be 0, or
Click's usage error 2). Cases are chosen to fail fast: no server ever starts here.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper, save
from tests.tiny_models import make_linear_onnx
from typer.testing import CliRunner

from edgeloop.cli.app import app
from edgeloop.core import errors
from edgeloop.core.errors import EdgeError

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

# 0 (done), 1 (an interrupted/aborted prompt never happens here), Click's usage error (2), and
# the error tree's codes.
EXIT_CODES = {0, 2} | {
    cls.exit_code
    for cls in vars(errors).values()
    if isinstance(cls, type) and issubclass(cls, EdgeError)
}
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _foreign_cnn(path: Path) -> Path:
    """An ONNX model made elsewhere: 1x3x32x32 images, flatten -> linear -> softmax."""
    w = np.zeros((3 * 32 * 32, 4), np.float32)
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [-1, 3 * 32 * 32])
    graph = helper.make_graph(
        [
            helper.make_node("Reshape", ["input", "shape"], ["flat"]),
            helper.make_node("MatMul", ["flat", "W"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["output"], axis=-1),
        ],
        "foreign",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 32, 32])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 4])],
        [shape, numpy_helper.from_array(w, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    save(model, str(path))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad-args")
    fake = root / "fake.onnx"
    fake.write_bytes(bytes(range(256)) * 4)
    empty = root / "empty.npz"
    np.savez(empty, x=np.zeros((0, 4), np.float32), y=np.zeros((0,), np.int64))
    wrong = root / "wrong.npz"
    np.savez(wrong, x=np.zeros((40, 3, 16, 16), np.float32), y=np.arange(40) % 2)
    no_label = root / "no_label.csv"
    no_label.write_text("a,b\n1,2\n3,4\n")
    return {
        "root": root,
        "linear": make_linear_onnx(root / "linear.onnx"),
        "foreign": _foreign_cnn(root / "foreign.onnx"),
        "fake": fake,
        "empty": empty,
        "no_label": no_label,
        "wrong": wrong,
        "home": root / "home",
    }


# Arguments, with {name} standing for a fixture file.
CASES: list[list[str]] = [
    ["serve", "{linear}", "--port", "-5"],
    ["serve", "{linear}", "--port", "70000"],
    ["serve", "{fake}", "--port", "0"],
    ["serve", "{root}/missing.onnx"],
    ["serve", "{linear}", "--max-connections", "0"],
    ["serve", "{linear}", "--profile", "linear"],
    ["serve", "{linear}", "--profile", "linear={root}/missing.npz"],
    ["serve", "{linear}", "--monitor-sample-rate", "2"],
    ["serve", "{linear}", "--header-timeout-s", "-1"],
    ["convert", "{fake}", "--to", "openvino", "--out", "{root}/c1"],
    ["convert", "{fake}", "--to", "tensorrt", "--out", "{root}/c2"],
    ["convert", "{foreign}", "--to", "openvino", "--out", "{root}/c3"],
    ["convert", "{foreign}", "--to", "openvino", "--data", "digits", "--out", "{root}/c4"],
    ["convert", "{linear}", "--to", "no-such-target"],
    ["convert", "{linear}", "--for", "no-such-device"],
    ["convert", "--to", "openvino"],
    ["bench", "{fake}"],
    ["bench", "{root}/missing.onnx"],
    ["bench", "{no_label}"],
    ["bench", "{linear}", "--data", "{empty}"],
    ["bench", "{linear}", "--data", "digits"],
    ["bench", "{linear}", "--batch-size", "0"],
    ["bench", "{linear}", "--runs", "-1"],
    ["export", "{root}/no-checkpoint", "--out", "{root}/u.onnx"],
    ["optimize", "{linear}", "--method", "no-such", "--data", "digits", "--out", "{root}/o.onnx"],
    ["optimize", "{fake}", "--method", "dynamic-int8", "--data", "digits", "-o", "{root}/o.onnx"],
    ["optimize", "{linear}", "--method", "dynamic-int8", "--data", "digits", "--out", "{linear}"],
    ["optimize", "{linear}", "--method", "fp16", "--data", "digits", "-o", "{root}/o.onnx"],
    ["optimize", "--method", "fp16"],
    ["tune", "{fake}", "--data", "digits"],
    ["tune", "{linear}", "--data", "digits", "--out", "{root}/tune"],
    ["tune", "{root}/missing.onnx", "--data", "digits"],
    ["data", "show", "{empty}"],
    ["data", "show", "{no_label}"],
    ["data", "show", "no-such-set"],
    ["data", "show", "digits", "--color", "rgb"],
    ["data", "show", "{no_label}", "--label-column", "nope"],
    ["data", "show", "{root}", "--image-size", "big"],
    ["data", "show", "{empty}", "--features-key", "f"],
    ["train", "--data", "{empty}", "--out", "{root}/t1"],
    ["train", "--data", "digits", "--arch", "no-such", "--out", "{root}/t2"],
    ["train", "--data", "digits", "--epochs", "0", "--out", "{root}/t3"],
    ["registry", "show", "nosuch:1", "--home", "{home}"],
    ["registry", "rm", "not-a-ref", "--home", "{home}"],
    ["registry", "publish", "{fake}", "--home", "{home}"],
    ["registry", "publish", "{root}/missing.onnx", "--home", "{home}"],
    ["fleet", "nodes", "--dir", "{root}/no-fleet"],
    ["fleet", "status", "--dir", "{root}/no-fleet"],
    ["fleet", "deploy", "nosuch:1", "--dir", "{root}/no-fleet"],
    ["fleet", "rollouts", "--dir", "{root}/no-fleet"],
    ["quickstart", "--data", "no-such-set", "--out", "{root}/q"],
]


def _args(case: list[str], files: dict[str, Path]) -> list[str]:
    return [a.format(**{k: str(v) for k, v in files.items()}) for a in case]


@pytest.mark.parametrize("case", CASES, ids=[" ".join(c)[:60] for c in CASES])
def test_bad_arguments_get_an_error_not_a_traceback(
    case: list[str], files: dict[str, Path]
) -> None:
    result = CliRunner().invoke(app, _args(case, files))
    shown = result.output
    exc = result.exception
    if isinstance(exc, EdgeError):  # what main() prints as "error: ... hint: ..."
        code = exc.exit_code
        shown += f"\n{exc.message}\n{exc.hint or ''}"
    elif exc is not None and not isinstance(exc, SystemExit):
        import traceback

        trace = "".join(traceback.format_exception(exc))
        pytest.fail(f"a traceback reaches the user:\n{trace}")
    else:
        code = result.exit_code
    assert "Traceback (most recent call last)" not in shown, shown
    assert not ANSI.search(shown), f"raw ANSI escapes in: {shown!r}"
    assert code in EXIT_CODES, f"exit code {code} is not from the error tree: {shown}"
    assert code != 0 or case[0] in ("data", "fleet"), f"bad arguments accepted: {shown}"


def _error(case: list[str], files: dict[str, Path]) -> EdgeError:
    exc = CliRunner().invoke(app, _args(case, files)).exception
    assert isinstance(exc, EdgeError), exc
    assert exc.hint
    return exc


def test_a_port_outside_tcp_is_named(files: dict[str, Path]) -> None:
    for port in ("-5", "70000"):
        exc = _error(["serve", "{linear}", "--port", port], files)
        assert isinstance(exc, errors.ConfigError)
        assert f"--port {port} is not a TCP port; expected 0-65535" in exc.message


def test_connection_limits_from_the_command_line_are_checked(files: dict[str, Path]) -> None:
    exc = _error(["serve", "{linear}", "--max-connections", "0"], files)
    assert isinstance(exc, errors.ConfigError)
    assert "max_connections=0" in exc.message
    exc = _error(["serve", "{linear}", "--body-timeout-s", "nan"], files)
    assert "body_timeout_s=nan" in exc.message


def test_a_file_that_is_not_onnx_is_refused_before_any_converter(
    files: dict[str, Path],
) -> None:
    for target in ("openvino", "tensorrt"):
        exc = _error(["convert", "{fake}", "--to", target, "--out", "{root}/c"], files)
        assert isinstance(exc, errors.UntrustedArtifactError)
        assert "not a readable ONNX model" in exc.message


def test_data_of_the_wrong_shape_says_the_shape_the_model_needs(files: dict[str, Path]) -> None:
    exc = _error(["convert", "{foreign}", "--to", "openvino", "--out", "{root}/c"], files)
    assert isinstance(exc, errors.ConfigError)
    assert "digits (the default --data)" in exc.message and "?x3x32x32" in exc.message
    assert "samples of shape 3x32x32" in str(exc.hint)
    case = ["convert", "{foreign}", "--to", "openvino", "--data", "{wrong}", "--out", "{root}/c"]
    exc = _error(case, files)
    assert "has samples of shape 3x16x16" in exc.message
    assert not (files["root"] / "c").exists()


@pytest.mark.parametrize(
    "case",
    [
        ["control", "--port", "70000", "--home", "{root}/control-home"],
        ["agent", "--control", "http://127.0.0.1:9", "--port", "-5", "--home", "{root}/agent"],
    ],
    ids=["control --port 70000", "agent --port -5"],
)
def test_servers_started_with_a_bad_port_answer_with_an_error(
    case: list[str], files: dict[str, Path]
) -> None:
    """As real processes (they start threads and state before they bind)."""
    done = subprocess.run(
        [sys.executable, "-m", "edgeloop.cli.app", *_args(case, files)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == errors.ConfigError.exit_code, done.stderr
    assert "port must be 0-65535" in done.stderr
