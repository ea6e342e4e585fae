"""The serve stage: a real ``edgeloop serve`` process, a short load, its figures.

The server runs as its own OS process on a free loopback port (as on a node); the load driver
sends one held-out test sample per request over HTTP (Open Inference Protocol v2, JSON), so the
accuracy it reports is the accuracy of answers that crossed the wire.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeloop.core.errors import TransportError
from edgeloop.data.dataset import Dataset
from edgeloop.pipeline.stage import Skipped

READY_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class ServedModel:
    name: str
    load: dict[str, Any]


@dataclass(frozen=True)
class ServeStageResult:
    url: str
    idle_rss_mb: float | None
    torch_imported: bool
    models: tuple[ServedModel, ...]
    metrics_requests: float | None

    def to_dict(self) -> dict[str, Any]:
        body = {
            "url": self.url,
            "idle_rss_mb": self.idle_rss_mb,
            "torch_imported": self.torch_imported,
            "models": {m.name: m.load for m in self.models},
            "metrics_requests_total": self.metrics_requests,
        }
        return {"serve": body}


def serve_stage(models: dict[str, Path], test: Dataset) -> ServeStageResult | Skipped:
    """:func:`serve_and_load`; Skipped when the ``serve`` extra is not installed.

    Raises:
        TransportError: from :func:`serve_and_load`.
    """
    import importlib.util

    missing = [m for m in ("fastapi", "uvicorn", "httpx") if importlib.util.find_spec(m) is None]
    if missing:
        return Skipped(
            f"the serve extra is not installed ({', '.join(missing)} missing): "
            "pip install 'edgeloop[serve]'"
        )
    return serve_and_load(models, test)


def serve_and_load(
    models: dict[str, Path], test: Dataset, *, duration_s: float = 2.0, concurrency: int = 4
) -> ServeStageResult:
    """Serve ``models`` (name -> ONNX file) in one server process and load each in turn.

    Raises:
        TransportError: the server did not become ready or died.
    """
    from edgeloop.bench.load import drive

    proc, ready = _start(models)
    try:
        served = []
        for name in models:

            def make(i: int, name: str = name) -> tuple[str, dict[str, Any]]:
                x = test.x[i % len(test)][None]
                body = {
                    "inputs": [
                        {
                            "name": "input",
                            "shape": list(x.shape),
                            "datatype": "FP32",
                            "data": x.ravel().tolist(),
                        }
                    ]
                }
                return f"/v2/models/{name}/infer", body

            def check(i: int, answer: dict[str, Any]) -> bool:
                scores = np.asarray(answer["outputs"][0]["data"], dtype=np.float64)
                return int(scores.argmax()) == int(test.y[i % len(test)])

            result = drive(
                ready["url"], make, check, duration_s=duration_s, concurrency=concurrency
            )
            served.append(ServedModel(name, result.to_dict()))
        requests = _scrape_requests(ready["url"])
    finally:
        _stop(proc)
    return ServeStageResult(
        url=ready["url"],
        idle_rss_mb=ready.get("idle_rss_mb"),
        torch_imported=bool(ready.get("torch_imported")),
        models=tuple(served),
        metrics_requests=requests,
    )


def _start(models: dict[str, Path]) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    args = [sys.executable, "-m", "edgeloop.cli.app", "serve"]
    args += [str(p) for p in models.values()]
    args += ["--port", "0", "--format", "json", "--log-level", "warning"]
    # The stage measures accuracy and latency of answers, not load shedding: with no queue-delay
    # bound, a stall of the machine (another job, a GC pause) shows in the latency tail instead
    # of turning requests into 429s that the accuracy figure would then leave out.
    args += ["--max-queue-delay-ms", "0"]
    proc = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
    )
    if proc.stdout is None:  # never: stdout is a pipe; keeps the type checker honest
        raise TransportError("could not read the server's output")
    text, deadline = "", time.monotonic() + READY_TIMEOUT_S
    decoder = json.JSONDecoder()
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        text += line
        try:
            ready, _ = decoder.raw_decode(text.strip())
            return proc, dict(ready)
        except json.JSONDecodeError:
            continue  # the object spans several lines; keep reading
    proc.kill()
    _, err = proc.communicate()
    raise TransportError(
        f"`edgeloop serve` did not report ready within {READY_TIMEOUT_S:.0f} s: "
        f"{err.strip().splitlines()[-1] if err.strip() else 'no output'}",
        hint="run `edgeloop serve MODEL.onnx` by hand to see its log",
    )


def _stop(proc: subprocess.Popen[str]) -> None:
    """SIGTERM (graceful shutdown), SIGKILL after 15 s; always close the pipes."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()


def _scrape_requests(url: str) -> float | None:
    """Sum of the server's own request counters, to cross-check the client's count."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=10).text
    total = None
    for family in text_string_to_metric_families(text):
        if family.name.endswith("requests"):
            total = sum(s.value for s in family.samples if s.name.endswith("_total"))
            break
    return total
