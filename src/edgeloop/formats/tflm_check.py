"""Run a ``.tflite`` through TensorFlow Lite Micro's reference kernels, as a microcontroller would.

Uses the ``tflite-micro`` package (the ``tflm`` extra): the same C++ interpreter and reference
kernels that firmware links, wrapped for Python. It gives two facts a device build needs:

- the outputs the microcontroller computes, to compare with LiteRT's on every test sample;
- the smallest tensor arena TFLM's allocator accepts for the model, found by bisection over
  real allocation attempts (allocation is deterministic for a given model and arena size).

TFLM reports problems (a missing kernel, a too-small arena) on the C ``stderr``; that stream is
captured while it runs so the reason becomes part of the error instead of noise on the console.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edgeloop.core.errors import ConversionError, require
from edgeloop.formats.parity import Predict
from edgeloop.runtime.litert_engine import dequantize, quantize

# Arenas are searched up to this size; more than any microcontroller in devices.py has.
MAX_ARENA = 64 * 1024 * 1024
_ARENA_TOTAL = re.compile(r"Arena allocation total (\d+) bytes")
START_ARENA = 256 * 1024
_MISSING_OP = re.compile(r"Didn't find op for builtin opcode '([A-Z0-9_]+)'")


class _Captured:
    text: str = ""


@contextlib.contextmanager
def _c_stderr() -> Iterator[_Captured]:
    """Redirect file descriptor 2 (where TFLM's C++ code writes) into a buffer."""
    captured = _Captured()
    with tempfile.TemporaryFile(mode="w+b") as sink:
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.text = sink.read().decode(errors="replace")


def _interpreter(data: bytes, arena: int) -> tuple[Any, str]:
    """A TFLM interpreter for ``data`` with ``arena`` bytes, or (None, TFLM's messages)."""
    runtime = require(
        "tflite_micro.python.tflite_micro.runtime", "tflm", "Checking models on TFLM kernels"
    )
    with _c_stderr() as log:
        try:
            interp = runtime.Interpreter.from_bytes(data, arena_size=arena)
        except (RuntimeError, ValueError):
            interp = None
    return interp, log.text


def missing_op(messages: str) -> str | None:
    """The operator TFLM has no kernel for, named in its messages (pure)."""
    found = _MISSING_OP.search(messages)
    return found.group(1) if found else None


def min_arena(data: bytes, name: str) -> int:
    """The smallest tensor arena (bytes) TFLM's allocator accepts for the model ``data``.

    The interpreter is first opened with a generous arena (doubling until it opens), and its
    recording allocator's total gives a lower bound (it leaves out temporary buffers). The
    exact figure is then bisected between the two with real allocation attempts, each in a
    child process: tflite-micro's Python wrapper can crash on an arena that is too small.

    Raises:
        ConversionError: TFLM lacks a kernel for an op (named), or no arena up to 64 MB works.
    """
    size = START_ARENA
    while True:
        interp, messages = _interpreter(data, size)
        if interp is not None:
            break
        if (op := missing_op(messages)) is not None:
            raise ConversionError(
                f"{name}: TFLM has no kernel for operator {op}; a microcontroller cannot run it",
                hint=f"replace {op} in the model with ops TFLM supports, or pick another target",
            )
        if size >= MAX_ARENA:
            last = (messages.strip().splitlines() or ["no message"])[-1]
            raise ConversionError(f"{name}: TFLM cannot allocate the model: {last}")
        size *= 2
    with _c_stderr() as log:
        interp.print_allocations()
    lo = min(arena_total(log.text, name), size)
    with tempfile.TemporaryDirectory(prefix="edgeloop-tflm-") as tmp:
        model = Path(tmp) / "model.tflite"
        model.write_bytes(data)
        hi = size
        while lo < hi:
            mid = (lo + hi) // 2
            if _opens(model, mid):
                hi = mid
            else:
                lo = mid + 1
    return hi


_PROBE = (
    "import sys\n"
    "from tflite_micro.python.tflite_micro import runtime\n"
    "runtime.Interpreter.from_file(sys.argv[1], arena_size=int(sys.argv[2]))\n"
)


def _opens(model: Path, arena: int) -> bool:
    """Whether TFLM opens ``model`` with ``arena`` bytes, tried in a child process."""
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, str(model), str(arena)],
        capture_output=True,
        timeout=120,
        check=False,
    )
    return done.returncode == 0


def arena_total(messages: str, name: str) -> int:
    """The figure of TFLM's ``Arena allocation total N bytes`` line (pure)."""
    found = _ARENA_TOTAL.search(messages)
    if found is None:
        raise ConversionError(f"{name}: TFLM did not report its arena use: {messages[-200:]!r}")
    return int(found.group(1))


def tflm_predictor(data: bytes, arena: int) -> Predict:
    """Run the model on TFLM one sample at a time: float in, float out (like LiteRT's)."""
    interp, messages = _interpreter(data, arena)
    if interp is None:
        raise ConversionError(f"TFLM cannot open the model with a {arena}-byte arena: {messages}")
    inp, outp = _detail(interp.get_input_details(0)), _detail(interp.get_output_details(0))

    def run(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        rows = []
        for sample in x:
            interp.set_input(quantize(sample[None], inp), 0)
            interp.invoke()
            rows.append(dequantize(interp.get_output(0), outp)[0])
        return np.stack(rows).astype(np.float32)

    return run


def _detail(d: dict[str, Any]) -> dict[str, Any]:
    """TFLM's tensor details in the shape LiteRT uses (``dtype`` + ``(scale, zero_point)``)."""
    q = d.get("quantization_parameters", {})
    scales, zeros = q.get("scales", []), q.get("zero_points", [])
    scale = float(scales[0]) if len(scales) else 0.0
    zero = int(zeros[0]) if len(zeros) else 0
    return {"dtype": d["dtype"], "quantization": (scale, zero)}


def tflm_version() -> str:
    import importlib.metadata

    return importlib.metadata.version("tflite-micro")
