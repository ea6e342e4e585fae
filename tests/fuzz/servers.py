"""The two servers the fuzzer runs against, as real OS processes on free loopback ports:
``edgeloop serve`` of a tiny real model (behind an admin token) and ``edgeloop control`` (its
admin token). Each yields a :class:`Target`: where its OpenAPI document is, the credential to
send, and the path parameters that name something real."""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from tests.control.process import control_process
from tests.tiny_models import make_linear_onnx

SERVE_TOKEN = "fuzz-serve-admin-token-0123456789abcdef"
CONTROL_TOKEN = "fuzz-control-admin-token-0123456789abcdef"
START_TIMEOUT_S = 90
MODEL = "lin"
# Bodies that reach inference (the model takes [batch, 4] FP32), sent with the real model name.
SAMPLE = [0.5, -1.0, 2.0, 0.25]
SERVE_BODIES = {
    "POST /v2/models/{model}/infer": {
        "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": SAMPLE}]
    },
    "POST /predict/{model}": {"features": SAMPLE},
}


@dataclass(frozen=True)
class Target:
    """A running server the fuzzer talks to."""

    name: str
    url: str
    doc_path: str
    token: str
    pinned: dict[str, str] = field(default_factory=dict)  # path parameter -> a real value
    # Operations never sent the real values: unloading the model would leave nothing to fuzz.
    unpinned: frozenset[str] = frozenset({"POST /v2/repository/models/{model}/unload"})
    bodies: dict[str, Any] = field(default_factory=dict)  # operation -> a body it accepts
    log: Path | None = None
    pid: int | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def alive(self) -> bool:
        return httpx.get(f"{self.url}{self.doc_path}", headers=self.headers).status_code == 200


@contextlib.contextmanager
def serve_target(folder: Path) -> Iterator[Target]:
    """``edgeloop serve`` of a 4-feature, 3-class linear model named ``lin``."""
    folder.mkdir(parents=True, exist_ok=True)
    model = make_linear_onnx(folder / f"{MODEL}.onnx")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "EDGELOOP_SERVE_ADMIN_TOKEN": SERVE_TOKEN}
    cmd = [sys.executable, "-m", "edgeloop.cli.serve", str(model), "--port", "0",
           "--format", "json", "--threads", "1"]  # fmt: skip
    log = folder / "serve.log"
    with log.open("wb") as stderr:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, env=env, bufsize=0)
    try:
        ready = _ready_json(proc, log)
        pinned = {"model": MODEL, "version": "1"}
        url = ready["url"]
        yield Target(
            "serve",
            url,
            "/openapi.json",
            SERVE_TOKEN,
            pinned,
            bodies=SERVE_BODIES,
            log=log,
            pid=proc.pid,
        )
    finally:
        _stop(proc)


@contextlib.contextmanager
def control_target(folder: Path) -> Iterator[Target]:
    """``edgeloop control`` on a fresh SQLite home, driven with its admin token."""
    with control_process(folder / "home", None, admin_token=CONTROL_TOKEN) as proc:
        pinned = {"file": "timestamp.json"}  # the signed TUF metadata every node polls
        yield Target(
            "control",
            proc.url,
            "/api/v1/openapi.json",
            CONTROL_TOKEN,
            pinned,
            log=proc.log,
            pid=proc.proc.pid,
        )


def _ready_json(proc: subprocess.Popen[bytes], log: Path) -> dict[str, object]:
    """The one JSON object ``--format json`` prints on stdout once the models are loaded."""
    assert proc.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    text, deadline = b"", time.monotonic() + START_TIMEOUT_S
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if selector.select(timeout=0.2):
                text += os.read(proc.stdout.fileno(), 65536)  # unbuffered: select sees it all
                with contextlib.suppress(json.JSONDecodeError):
                    return dict(json.loads(text))
    finally:
        selector.close()
    _stop(proc)
    raise AssertionError(f"edgeloop serve did not start: {log.read_text(errors='replace')[-2000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
