"""The cascade in the server: a small model answers, unsure rows go to a large model or a parent.

The small model's confidence is set by the input: ``softmax(x)`` over two classes, so
``[10, 0]`` is ~certain and ``[0.1, 0]`` is ~52% sure. The large model is ``softmax(swap(x))``:
its answers are told apart from the small one's by value. The parent tier is a real
``edgeloop serve`` process on a loopback port; a parent that answers 500 is a real HTTP server.
"""

from __future__ import annotations

import http.server
import json
import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import typer
from onnx import TensorProto, helper, numpy_helper
from prometheus_client.parser import text_string_to_metric_families
from tests.serving.harness import infer_url, json_request, serving
from typer.testing import CliRunner

from edgeloop.cli.serve import cascades_from_flags, serve
from edgeloop.core.errors import ConfigError
from edgeloop.serving import ServerConfig
from edgeloop.serving.cascade import (
    CascadeSpec,
    escalated_rows,
    merge_rows,
    parse_cascade,
    parse_cascade_url,
)

SURE, UNSURE, SURE_1 = [10.0, 0.0], [0.1, 0.0], [0.0, 10.0]


def _scorer(path: Path, weights: list[list[float]]) -> Path:
    """``softmax(x @ W)`` for x of shape (batch, 2)."""
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["input", "W"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["output"], axis=-1),
        ],
        "scorer",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 2])],
        initializer=[numpy_helper.from_array(np.array(weights, np.float32), "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return np.asarray(e / e.sum(axis=1, keepdims=True))


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    small = _scorer(tmp_path / "small.onnx", [[1, 0], [0, 1]])
    big = _scorer(tmp_path / "big.onnx", [[0, 1], [1, 0]])
    return small, big


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def _infer(s: Any, rows: list[list[float]]) -> tuple[dict[str, Any], np.ndarray]:
    r = s.post(infer_url("small"), json=json_request(np.array(rows, np.float32)))
    assert r.status_code == 200, r.text
    doc = r.json()
    return doc.get("parameters", {}), np.array(doc["outputs"][0]["data"]).reshape(len(rows), 2)


# -- pure parts --------------------------------------------------------------------------------


def test_rows_below_the_threshold_escalate_and_nan_rows_too() -> None:
    scores = {"output": np.array([[0.9, 0.1], [0.6, 0.4], [np.nan, 0.5]], np.float32)}
    assert escalated_rows(scores, 0.8).tolist() == [1, 2]
    assert escalated_rows(scores, 0.0).tolist() == []  # 0 never escalates; NaN's confidence: 0
    assert escalated_rows(scores, 1.0).tolist() == [0, 1, 2]


def test_merge_replaces_only_the_escalated_rows_and_refuses_a_wrong_shape() -> None:
    small = {"output": np.zeros((3, 2), np.float32)}
    merged = merge_rows(small, {"output": np.ones((1, 2), np.float32)}, np.array([1]))
    assert merged["output"].tolist() == [[0, 0], [1, 1], [0, 0]]
    assert small["output"].sum() == 0  # the small answer is not changed in place
    with pytest.raises(Exception, match=r"output 'output' is float32\[2, 2\]; expected"):
        merge_rows(small, {"output": np.ones((2, 2), np.float32)}, np.array([1]))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("small=big@1.5", "threshold 1.5 is outside \\[0, 1\\]"),
        ("small=big@-0.1", "threshold -0.1 is outside \\[0, 1\\]"),
        ("small=big@high", "threshold 'high' is not a number"),
        ("small=big", "'small=big' is not SMALL=TARGET@THRESHOLD"),
        ("small@0.5", "'small@0.5' is not SMALL=TARGET@THRESHOLD"),
        ("small=small@0.5", "sends model 'small' to itself"),
    ],
)
def test_bad_cascade_flags_are_config_errors_naming_the_value(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_cascade(text)


@pytest.mark.parametrize(
    "url",
    ["ftp://gw/v2/models/big", "http:///v2/models/big", "http://gw:8000/v1/models/big"],
)
def test_a_parent_url_must_name_a_v2_model(url: str) -> None:
    with pytest.raises(ConfigError, match="is not an http\\(s\\) URL of an Open Inference"):
        parse_cascade_url(f"small={url}@0.5")


def test_parent_url_parsing_keeps_an_at_sign_in_the_url_and_appends_infer() -> None:
    small, spec = parse_cascade_url("small=http://u@gw:8000/v2/models/big/versions/2@0.7")
    assert small == "small" and spec.threshold == 0.7
    assert spec.url == "http://u@gw:8000/v2/models/big/versions/2/infer"


def test_a_small_model_given_twice_is_refused() -> None:
    with pytest.raises(ConfigError, match="name model 'small' twice"):
        cascades_from_flags(["small=big@0.5"], ["small=http://gw/v2/models/big@0.5"])


# -- a local large model -------------------------------------------------------------------------


def test_unsure_rows_go_to_the_large_model_and_are_counted(pair: tuple[Path, Path]) -> None:
    config = ServerConfig(cascades={"small": CascadeSpec(0.8, large="big")})
    rows = [SURE, UNSURE, SURE_1]
    with serving(list(pair), config) as s:
        params, out = _infer(s, rows)
        text = s.metrics()
    x = np.array(rows)
    assert params == {"answered_by": "large", "rows": 3, "escalated_rows": 1}
    np.testing.assert_allclose(out[[0, 2]], _softmax(x[[0, 2]]), atol=1e-6)  # small's rows
    np.testing.assert_allclose(out[1], _softmax(x[[1], ::-1])[0], atol=1e-6)  # large's row
    assert _metric(text, "edgeloop_cascade_escalations_total", model="small", tier="large") == 1
    assert _metric(text, "edgeloop_cascade_calls_total", model="small", tier="large") == 1
    assert _metric(text, "edgeloop_requests_total", model="big", endpoint="cascade") == 1


def test_a_confident_request_never_reaches_the_large_model(pair: tuple[Path, Path]) -> None:
    config = ServerConfig(cascades={"small": CascadeSpec(0.8, large="big")})
    with serving(list(pair), config) as s:
        sure = s.post("/predict/small", json={"features": SURE}).json()
        unsure = s.post("/predict/small", json={"features": UNSURE}).json()
        text = s.metrics()
    assert (sure["answered_by"], sure["prediction"]) == ("small", 0)
    assert (unsure["answered_by"], unsure["prediction"]) == ("large", 1)
    assert _metric(text, "edgeloop_cascade_calls_total", model="small") == 1


@pytest.mark.parametrize(
    ("threshold", "answered_by", "escalated"), [(0.0, "small", 0), (1.0, "large", 2)]
)
def test_threshold_zero_never_escalates_and_one_always_does(
    pair: tuple[Path, Path], threshold: float, answered_by: str, escalated: int
) -> None:
    config = ServerConfig(cascades={"small": CascadeSpec(threshold, large="big")})
    with serving(list(pair), config) as s:
        params, _ = _infer(s, [SURE, [0.0, 0.0]])  # ~1.0 and exactly 0.5 confident
        text = s.metrics()
    assert params["answered_by"] == answered_by and params["escalated_rows"] == escalated
    assert _metric(text, "edgeloop_cascade_escalations_total", model="small") == escalated


def test_the_large_model_must_take_the_small_models_tensors(
    pair: tuple[Path, Path], cnn: Path
) -> None:
    config = ServerConfig(cascades={"small": CascadeSpec(0.5, large="cnn")})
    message = "--cascade small=cnn: the models' tensors differ"
    with pytest.raises(ConfigError, match=message), serving([pair[0], cnn], config):
        pass


def test_a_cascade_target_that_is_cascaded_itself_is_refused() -> None:
    specs = {"a": CascadeSpec(0.5, large="b"), "b": CascadeSpec(0.5, large="c")}
    with pytest.raises(ConfigError, match="cascade target\\(s\\) \\['b'\\] are themselves"):
        ServerConfig(cascades=specs)


# -- a parent tier over HTTP ---------------------------------------------------------------------


def _ready(proc: subprocess.Popen[str]) -> dict[str, Any]:
    lines: queue.Queue[str] = queue.Queue()
    stdout = proc.stdout
    assert stdout is not None
    threading.Thread(target=lambda: [lines.put(x) for x in stdout], daemon=True).start()
    text, deadline = "", time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            text += lines.get(timeout=0.2)
            return dict(json.loads(text))
        except (queue.Empty, json.JSONDecodeError):
            continue
    proc.kill()
    pytest.fail(f"the parent tier did not start: {text!r} {proc.communicate()[1][-2000:]!r}")


@pytest.fixture(scope="module")
def parent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``edgeloop serve`` of the large model, as a parent tier; yields its base URL."""
    big = _scorer(tmp_path_factory.mktemp("parent") / "big.onnx", [[0, 1], [1, 0]])
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgeloop.cli.serve", str(big), "--port", "0", "--format", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        yield str(_ready(proc)["url"])
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def _via(url: str, threshold: float = 0.8) -> ServerConfig:
    small, spec = parse_cascade_url(f"small={url}@{threshold}")
    # A generous timeout: these tests are about what the parent answers (200, 404, 500), which a
    # parent process slowed down by a loaded machine must not turn into a timeout fallback.
    return ServerConfig(cascades={small: spec}, cascade_timeout_s=30.0)


def test_unsure_rows_go_to_the_parent_tier(pair: tuple[Path, Path], parent: str) -> None:
    rows = [SURE, UNSURE, UNSURE]
    with serving([pair[0]], _via(f"{parent}/v2/models/big")) as s:
        params, out = _infer(s, rows)
        sure = s.post("/predict", json={"features": SURE}).json()
        text = s.metrics()
    assert params == {"answered_by": "parent", "rows": 3, "escalated_rows": 2}
    np.testing.assert_allclose(out[1:], _softmax(np.array(rows)[1:, ::-1]), atol=1e-6)
    assert sure["answered_by"] == "small"
    assert _metric(text, "edgeloop_cascade_escalations_total", model="small", tier="parent") == 2
    assert _metric(text, "edgeloop_cascade_calls_total", model="small", tier="parent") == 1
    assert _metric(text, "edgeloop_cascade_fallbacks_total") == 0


def test_a_parent_answering_404_falls_back_to_the_small_answer(
    pair: tuple[Path, Path], parent: str
) -> None:
    with serving([pair[0]], _via(f"{parent}/v2/models/nope")) as s:
        params, out = _infer(s, [UNSURE])
        text = s.metrics()
    assert params["answered_by"] == "fallback" and params["escalated_rows"] == 1
    assert "answered 404" in params["fallback_reason"]
    np.testing.assert_allclose(out, _softmax(np.array([UNSURE])), atol=1e-6)
    assert _metric(text, "edgeloop_cascade_fallbacks_total", error="TransportError") == 1


class _Failing(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(500)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: Any) -> None:
        return None


def test_a_parent_answering_500_falls_back(pair: tuple[Path, Path]) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v2/models/big"
        with serving([pair[0]], _via(url)) as s:
            params, _ = _infer(s, [UNSURE, SURE])
            text = s.metrics()
    finally:
        server.shutdown()
        server.server_close()
    assert params["answered_by"] == "fallback" and "answered 500" in params["fallback_reason"]
    assert _metric(text, "edgeloop_cascade_fallbacks_total", model="small", tier="parent") == 1


def test_a_parent_that_is_down_falls_back(pair: tuple[Path, Path]) -> None:
    # Bound but not listening: connections are refused, and no other process can take the port
    # while the test runs (as it could a port merely closed again).
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        with serving([pair[0]], _via(f"http://127.0.0.1:{port}/v2/models/big")) as s:
            params, out = _infer(s, [UNSURE])
            again, _ = _infer(s, [UNSURE])  # skipped by the breaker, or refused: a fallback
            text = s.metrics()
    assert params["answered_by"] == again["answered_by"] == "fallback"
    assert "did not answer: ConnectError" in params["fallback_reason"]
    np.testing.assert_allclose(out, _softmax(np.array([UNSURE])), atol=1e-6)
    assert _metric(text, "edgeloop_cascade_calls_total", model="small", tier="parent") == 2
    assert _metric(text, "edgeloop_cascade_fallbacks_total", model="small", tier="parent") == 2


# -- the command line ----------------------------------------------------------------------------

cli = typer.Typer()
cli.command()(serve)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--cascade", "nope=small@0.5"], "--cascade names model\\(s\\) 'nope', which are not"),
        (["--cascade", "small=nope@0.5"], "--cascade names model\\(s\\) 'nope', which are not"),
        (["--cascade", "small=big@2"], "threshold 2 is outside \\[0, 1\\]"),
        (["--cascade-url", "small=gw:80/v2/models/x@0.5"], "'gw:80/v2/models/x' is not an http"),
        (["--cascade-timeout", "0"], "cascade_timeout_s=0.0 \\(expected > 0\\)"),
    ],
)
def test_bad_cascade_flags_stop_the_server_before_it_listens(
    pair: tuple[Path, Path], flags: list[str], message: str
) -> None:
    result = CliRunner().invoke(cli, [*map(str, pair), "--port", "0", *flags])
    assert isinstance(result.exception, ConfigError), result.output
    assert re.search(message, result.exception.message)
