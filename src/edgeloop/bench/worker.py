"""Run a benchmark in a fresh process, so its peak RSS is that of ONNX Runtime + the model.

Protocol: the parent starts ``python -m edgeloop.bench.worker``, writes one JSON object on its
stdin (``{"config": BenchConfig dict, "data": null | {"npz": path, ...schema}}``) and reads one
JSON object from its stdout: ``{"report": BenchReport dict}`` or ``{"error": EdgeError dict}``.
Progress comes on stderr as lines ``@progress DONE TOTAL``; any other stderr line is kept for
the error message should the worker die.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import IO, Any

import numpy as np

from edgeloop.bench.measure import Progress, measure
from edgeloop.bench.report import BenchConfig, BenchReport, RssScope
from edgeloop.core import errors
from edgeloop.core.errors import ConversionError, EdgeError
from edgeloop.data.dataset import Dataset, Modality, Task

_PROGRESS = "@progress"
_PROGRESS_EVERY_S = 0.1  # enough for a smooth bar, few enough lines not to cost CPU


def _save_data(data: Dataset, folder: Path) -> dict[str, Any]:
    path = folder / "data.npz"
    np.savez(path, x=data.x, y=data.y)
    return {
        "npz": str(path),
        "name": data.name,
        "classes": list(data.classes),
        "modality": data.modality.value,
        "task": data.task.value,
        "source": data.source,
    }


def _load_data(spec: dict[str, Any]) -> Dataset:
    with np.load(spec["npz"], allow_pickle=False) as arrays:
        x, y = arrays["x"], arrays["y"]
    return Dataset(
        name=str(spec["name"]),
        x=x,
        y=y,
        classes=tuple(str(c) for c in spec["classes"]),
        modality=Modality(spec["modality"]),
        task=Task(spec["task"]),
        source=str(spec["source"]),
    )


def _rebuild_error(body: dict[str, Any]) -> EdgeError:
    """The worker's EdgeError as the same class here (its message and hint intact)."""
    cls = getattr(errors, str(body.get("error")), None)
    message, hint = str(body.get("message")), body.get("hint")
    # Classes with their own constructor (ParityError, MissingDependencyError) fall back.
    if isinstance(cls, type) and issubclass(cls, EdgeError) and cls.__init__ is EdgeError.__init__:
        return cls(message, hint=hint)
    return ConversionError(f"benchmark worker failed: {message}", hint=hint)


def _pump_stderr(stream: IO[str], progress: Progress | None, tail: deque[str]) -> None:
    for line in stream:
        if line.startswith(_PROGRESS):
            done, total = (int(v) for v in line.split()[1:3])
            if progress is not None:
                progress(done, total)
        else:
            tail.append(line.rstrip())


def _child_env() -> dict[str, str]:
    # The child must import this very edgeloop, even when it is not installed (a source tree).
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def run_isolated(
    config: BenchConfig, data: Dataset | None, progress: Progress | None = None
) -> BenchReport:
    """Benchmark in a fresh ``python -m edgeloop.bench.worker`` process.

    Raises:
        EdgeError: the worker's own error, re-raised as the same class.
        ConversionError: the worker died without answering (crash, killed for memory).
    """
    with tempfile.TemporaryDirectory(prefix="edgeloop-bench-") as tmp:
        payload = {
            "config": config.to_dict(),
            "data": None if data is None else _save_data(data, Path(tmp)),
        }
        # The with block closes the pipes and reaps the worker however this block is left.
        with subprocess.Popen(
            [sys.executable, "-m", "edgeloop.bench.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_child_env(),
        ) as proc:
            try:
                out, code, tail = _talk(proc, payload, progress)
            finally:
                if proc.poll() is None:  # interrupted (Ctrl-C): do not leave the worker running
                    proc.kill()
    return _answer(config, out, code, list(tail))


def _talk(
    proc: subprocess.Popen[str], payload: dict[str, Any], progress: Progress | None
) -> tuple[str, int, list[str]]:
    """Send the request, stream progress from stderr; return (stdout, exit code, stderr tail)."""
    stdin, stdout, stderr = proc.stdin, proc.stdout, proc.stderr
    if stdin is None or stdout is None or stderr is None:  # only without PIPE; never here
        raise ConversionError("could not open pipes to the benchmark worker")
    tail: deque[str] = deque(maxlen=20)
    pump = threading.Thread(target=_pump_stderr, args=(stderr, progress, tail), daemon=True)
    pump.start()
    try:
        stdin.write(json.dumps(payload))
        stdin.close()
    except BrokenPipeError:
        pass  # the worker died at start-up; its exit code and stderr tell why, below
    out = stdout.read()
    code = proc.wait()
    pump.join()
    return out, code, list(tail)


def _answer(config: BenchConfig, out: str, code: int, tail: list[str]) -> BenchReport:
    try:
        body = json.loads(out) if out.strip() else {}
    except json.JSONDecodeError:
        body = {}
    if "report" in body:
        return BenchReport.from_dict(body["report"])
    if "error" in body:
        raise _rebuild_error(body["error"])
    last = " | ".join(tail[-5:]) or "no output"
    raise ConversionError(
        f"the benchmark worker for {str(config.model_path)!r} died (exit code {code}): {last}",
        hint="run with --no-isolate to see the error in this process",
    )


def _reporter() -> Progress:
    last = [0.0]

    def report(done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - last[0] >= _PROGRESS_EVERY_S:
            last[0] = now
            sys.stderr.write(f"{_PROGRESS} {done} {total}\n")
            sys.stderr.flush()

    return report


def main() -> int:
    """Worker entry point: one request on stdin, one answer on stdout."""
    request = json.loads(sys.stdin.read())
    try:
        config = BenchConfig.from_dict(request["config"])
        data = None if request.get("data") is None else _load_data(request["data"])
        report = measure(config, data, RssScope.SUBPROCESS, progress=_reporter())
    except EdgeError as exc:
        sys.stdout.write(json.dumps({"error": exc.to_dict()}))
        return 1
    sys.stdout.write(json.dumps({"report": report.to_dict()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
