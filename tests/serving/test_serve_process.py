"""``edgeloop serve`` as a real process on a real port: ready, answers, no torch, stops cleanly.

The command runs as ``python -m edgeloop.cli.serve`` (the same Typer command and error handling
as ``edgeloop serve``); ``--port 0`` picks a free port, which the ready line (``--format json``,
one JSON object on stdout) reports.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.serving.harness import binary_request, image, infer_url, json_request
from tests.tiny_models import make_linear_onnx

READY_LIMIT_S = 60.0


def _start(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "edgeloop.cli.serve", *args, "--port", "0", "--format", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _ready_info(proc: subprocess.Popen[str]) -> dict[str, Any]:
    """Read stdout until it holds one whole JSON object (the ready report)."""
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    stdout = proc.stdout
    threading.Thread(
        target=lambda: [lines.put(x) for x in iter(stdout.readline, "")], daemon=True
    ).start()
    text, deadline = "", time.monotonic() + READY_LIMIT_S
    while time.monotonic() < deadline and (proc.poll() is None or not lines.empty()):
        try:
            text += lines.get(timeout=0.2)
        except queue.Empty:
            continue
        try:
            return dict(json.loads(text))
        except json.JSONDecodeError:
            continue
    proc.kill()
    _, err = proc.communicate()
    pytest.fail(f"edgeloop serve did not become ready; stdout={text!r} stderr={err[-2000:]!r}")


@pytest.fixture
def served(cnn: Path) -> Iterator[tuple[subprocess.Popen[str], dict[str, Any]]]:
    proc = _start(str(cnn), "--max-batch", "8", "--max-delay-ms", "2", "--threads", "1")
    try:
        yield proc, _ready_info(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_real_process_serves_without_torch_and_reports_idle_rss(
    served: tuple[subprocess.Popen[str], dict[str, Any]], record_property: Any
) -> None:
    proc, info = served
    assert info["torch_imported"] is False and info["pid"] == proc.pid
    assert info["models"][0]["model"] == "cnn" and info["models"][0]["serving"] == "1"
    assert isinstance(info["idle_rss_mb"], float) and info["idle_rss_mb"] > 0
    record_property("idle_rss_mb", info["idle_rss_mb"])
    print(f"edgeloop serve idle RSS with one small CNN: {info['idle_rss_mb']:.1f} MiB")
    maps = Path(f"/proc/{proc.pid}/maps")
    if maps.exists():  # Linux: no torch library is mapped into the process either
        assert "libtorch" not in maps.read_text()
    with httpx.Client(base_url=info["url"], timeout=30) as client:
        assert client.get("/v2/health/ready").status_code == 200
        health = client.get("/health").json()
    assert health["process"] == {"pid": proc.pid, "torch_imported": False}


def test_real_process_answers_json_binary_predict_and_metrics(
    served: tuple[subprocess.Popen[str], dict[str, Any]], cnn: Path
) -> None:
    _, info = served
    session = ort.InferenceSession(str(cnn), providers=["CPUExecutionProvider"])
    xs = [image(seed=i) for i in range(16)]
    expected = [session.run(None, {"input": x})[0] for x in xs]
    with httpx.Client(base_url=info["url"], timeout=30) as client:
        json_answer = client.post(infer_url("cnn"), json=json_request(xs[0])).json()
        body, headers = binary_request(xs[1])
        binary = client.post(infer_url("cnn"), content=body, headers=headers)
        predicted = client.post("/predict", json={"features": xs[2].ravel().tolist()}).json()

        def one(i: int) -> np.ndarray:
            b, h = binary_request(xs[i])
            r = client.post(infer_url("cnn"), content=b, headers=h)
            assert r.status_code == 200, (r.status_code, r.text[:300])
            n = int(r.headers["inference-header-content-length"])
            return np.frombuffer(r.content[n:], "<f4").reshape(1, 10)

        with ThreadPoolExecutor(8) as pool:  # concurrent: may share dynamic batches
            concurrent = list(pool.map(one, range(16)))
        metrics = client.get("/metrics").text
    np.testing.assert_allclose(
        np.array(json_answer["outputs"][0]["data"]).reshape(1, 10), expected[0], atol=1e-6
    )
    n = int(binary.headers["inference-header-content-length"])
    np.testing.assert_allclose(
        np.frombuffer(binary.content[n:], "<f4").reshape(1, 10), expected[1], atol=1e-6
    )
    assert predicted["prediction"] == int(expected[2].argmax())
    for got, want in zip(concurrent, expected, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)
    families = {f.name for f in text_string_to_metric_families(metrics)}
    assert {"edgeloop_requests", "edgeloop_request_seconds", "edgeloop_batch_size"} <= families


def test_importing_the_server_and_its_command_leaves_torch_out() -> None:
    code = (
        "import sys, edgeloop.serving, edgeloop.serving.server, edgeloop.cli.serve; "
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_sigterm_stops_the_server_gracefully(
    served: tuple[subprocess.Popen[str], dict[str, Any]],
) -> None:
    proc, _ = served
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]


@pytest.mark.parametrize(
    ("make", "code", "message"),
    [
        (lambda d: d / "missing.onnx", 4, "missing.onnx' does not exist"),
        (lambda d: _garbage(d / "broken.onnx"), 6, "is not a readable ONNX model"),
    ],
)
def test_a_model_that_cannot_load_stops_the_server_with_its_exit_code(
    tmp_path: Path, make: Any, code: int, message: str
) -> None:
    proc = _start(str(make(tmp_path)))
    out, err = proc.communicate(timeout=READY_LIMIT_S)
    assert proc.returncode == code, err[-2000:]
    assert message in err and out == ""


def _garbage(path: Path) -> Path:
    path.write_bytes(b"\x00not a model")
    return path


def test_ab_flags_split_a_real_model_folder(tmp_path: Path) -> None:
    for version, seed in ((1, 1), (2, 2)):
        (tmp_path / "clf" / str(version)).mkdir(parents=True)
        make_linear_onnx(tmp_path / "clf" / str(version) / "model.onnx", seed=seed)
    proc = _start(str(tmp_path / "clf"), "--ab", "clf=1:1,2:1", "--seed", "3")
    try:
        info = _ready_info(proc)
        with httpx.Client(base_url=info["url"], timeout=30) as client:
            versions = {
                client.post(
                    "/predict", json={"features": [1, 2, 3, 4]}, headers={"X-Request-Key": f"k{i}"}
                ).json()["model_version"]
                for i in range(40)
            }
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    assert versions == {"1", "2"}
