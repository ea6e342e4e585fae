"""A model made elsewhere: its ONNX file as a torch program for the converters that need one.

TFLite (litert-torch) and Core ML (coremltools 6 and later have no ONNX frontend) convert torch
programs. With a checkpoint edgeloop exports the trained module; with only an ONNX file,
onnx2torch rebuilds the graph as a torch module in the TFLite converter environment
(:mod:`edgeloop.formats.onnx_torch_worker`) and ``torch.export`` saves it as a ``.pt2`` program
at batch 1. Every output made from it is still compared with the ONNX file itself.

onnx2torch is installed there without its dependencies (``--no-deps``): it declares torchvision,
and pip's newest torchvision pulls a newer, CUDA-built torch; the worker does without it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeloop.core.errors import ConversionError, EdgeError, require
from edgeloop.formats.convert import ConvertSource
from edgeloop.formats.tflite import converter_python

if TYPE_CHECKING:
    import torch

WORKER = Path(__file__).with_name("onnx_torch_worker.py")
TIMEOUT_S = 600
INSTALL = (
    "ENV/bin/pip install onnx && ENV/bin/pip install --no-deps 'onnx2torch==1.5.15' "
    "(`make tflite-env` does; an older .venv-tflite needs these two lines)"
)
PROVIDE = (
    "pass the model's torch checkpoint (--checkpoint DIR), or convert to a target that reads "
    "ONNX itself (openvino, tensorrt)"
)


def _run(args: list[str]) -> tuple[int, str, str]:
    python = converter_python()
    try:
        done = subprocess.run(
            [str(python), str(WORKER), *args], capture_output=True, text=True, timeout=TIMEOUT_S
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConversionError(f"the converter environment at {python} did not run: {exc}") from exc
    return done.returncode, done.stdout, done.stderr


@functools.cache
def _has_onnx2torch(python: Path) -> bool:
    code = "import importlib.util as u, sys; sys.exit(0 if u.find_spec('onnx2torch') else 1)"
    try:
        return subprocess.run([str(python), "-c", code], timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def missing_onnx2torch() -> str | None:
    """Why an ONNX file cannot become a torch program here (None when it can)."""
    try:
        python = converter_python()
    except EdgeError as exc:
        return f"no TFLite converter environment to run onnx2torch in: {exc.hint}"
    if not _has_onnx2torch(python):
        return f"onnx2torch is not installed in the converter environment {python}: {INSTALL}"
    return None


@functools.cache
def _unsupported(path: Path, mtime_ns: int) -> tuple[str, ...]:
    code, out, err = _run(["--onnx", str(path), "--check"])
    if code != 0:
        raise ConversionError(
            f"onnx2torch could not read {path.name}: {_last(err)}", hint=f"{PROVIDE}"
        )
    return tuple(json.loads(out.strip().splitlines()[-1])["unsupported"])


def unsupported_ops(onnx: Path) -> tuple[str, ...]:
    """The operators of ``onnx`` onnx2torch has no converter for (``Type (opset N)``)."""
    return _unsupported(onnx.resolve(), onnx.stat().st_mtime_ns)


def why_not_foreign(onnx: Path | None) -> str | None:
    """Why a torch-based target cannot be made from ``onnx`` alone (None when it can)."""
    if (reason := missing_onnx2torch()) is not None:
        return f"{reason}; or {PROVIDE.split(', or ')[0]}"
    if onnx is None:
        return None
    ops = unsupported_ops(onnx)
    if ops:
        return f"onnx2torch cannot convert {', '.join(ops)}: {PROVIDE}"
    return None


def program_from_onnx(onnx: Path, sample_shape: tuple[int, ...], out: Path) -> dict[str, Any]:
    """Write ``onnx`` as a ``torch.export`` program at batch 1 to ``out`` (a ``.pt2`` file).

    Returns the worker's report (``tools``: onnx2torch and torch versions).

    Raises:
        MissingDependencyError: no converter environment.
        ConversionError: onnx2torch is not installed there, has no converter for an operator
            (each named), or torch.export cannot trace the module it built.
    """
    if (reason := missing_onnx2torch()) is not None:
        raise ConversionError(reason, hint=PROVIDE)
    if ops := unsupported_ops(onnx):
        raise ConversionError(
            f"{onnx.name} uses operators onnx2torch has no converter for: {', '.join(ops)}",
            hint=PROVIDE,
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    shape = ",".join(str(d) for d in (1, *sample_shape))
    code, stdout, err = _run(["--onnx", str(onnx), "--out", str(out), "--shape", shape])
    if code != 0 or not out.is_file():
        raise ConversionError(
            f"{onnx.name} could not be rebuilt as a torch program at input shape [{shape}]: "
            f"{_last(err)}",
            hint=PROVIDE,
        )
    report: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    return report


def program_for(source: ConvertSource, out: Path) -> tuple[Path, dict[str, Any]]:
    """``source``'s parent ONNX as a torch program in ``out/onnx2torch/``, made once per parent
    and input shape (TFLite FP32, INT8, Core ML and the TensorRT re-export share it); and
    where it came from (``from``, ``tools``) for the manifest."""
    program = out / "onnx2torch" / f"{source.name}.pt2"
    stamp = program.with_suffix(".json")
    shape = [int(d) for d in source.x_check.shape[1:]]
    key = {"onnx_sha256": hashlib.sha256(source.onnx.read_bytes()).hexdigest(), "shape": shape}
    made = json.loads(stamp.read_text()) if stamp.is_file() and program.is_file() else {}
    if {k: made.get(k) for k in key} != key:
        report = program_from_onnx(source.onnx, tuple(shape), program)
        made = {**key, "tools": report["tools"]}
        stamp.write_text(json.dumps(made))
    tools = made["tools"]
    origin = {"from": f"{source.onnx.name} via onnx2torch {tools['onnx2torch']}", "tools": tools}
    return program, origin


def load_program_module(program: Path) -> torch.nn.Module:
    """The saved program as a plain ``fx.GraphModule`` (batch 1).

    ``ExportedProgram.module()`` refuses ``train()`` / ``eval()``, which torch's TorchScript
    ONNX exporter calls, so its graph is copied into a plain GraphModule.

    Raises:
        ConversionError: the program cannot be loaded.
    """
    torch_ = require("torch", "train", "Loading a torch program")
    try:
        loaded = torch_.export.load(str(program)).module()
    except Exception as exc:
        raise ConversionError(f"{program.name} is not a loadable torch program: {exc}") from exc
    module: torch.nn.Module = torch_.fx.GraphModule(loaded, loaded.graph)
    return module


def _last(stderr: str) -> str:
    return (stderr.strip().splitlines() or ["no message"])[-1]
