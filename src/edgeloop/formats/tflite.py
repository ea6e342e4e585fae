"""TFLite: produce FP32 / full-INT8 ``.tflite`` files from a torch module, read and run them.

Producing uses litert-torch in a converter environment of its own (see
:mod:`edgeloop.formats.tflite_worker` for why): the module is saved as a ``torch.export``
program (batch 1, the shape a device runs), and the converter environment's Python turns it
into a ``.tflite``. The environment is ``$EDGELOOP_TFLITE_PYTHON``, else this interpreter when
it has litert-torch, else ``.venv-tflite`` in the working folder (``make tflite-env``).

Reading uses the flatbuffer schema shipped with ``ai-edge-litert``; running uses its
interpreter (the ``tflite`` extra), quantizing float inputs with the model's own input scale.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from edgeloop.core.errors import ConfigError, ConversionError, MissingDependencyError, require
from edgeloop.formats.parity import Predict
from edgeloop.runtime.litert_engine import dequantize, quantize

if TYPE_CHECKING:
    import torch

WORKER = Path(__file__).with_name("tflite_worker.py")
ENV_VAR = "EDGELOOP_TFLITE_PYTHON"
LOCAL_ENV = Path(".venv-tflite") / "bin" / "python"
TIMEOUT_S = 900
# Tensor types whose ops run on integer kernels (INT32 holds biases and shapes).
INTEGER_TYPES = ("INT8", "UINT8", "INT16", "INT32", "INT64", "BOOL")


def converter_python() -> Path:
    """The Python that has litert-torch.

    Raises:
        MissingDependencyError: none was found (the hint says how to make one).
    """
    if env := os.environ.get(ENV_VAR):
        if not Path(env).is_file():
            raise ConfigError(
                f"{ENV_VAR}={env!r} is not a file",
                hint=f"point {ENV_VAR} at the converter environment's bin/python",
            )
        return Path(env)
    if importlib.util.find_spec("litert_torch") is not None:
        return Path(sys.executable)
    for candidate in env_candidates():
        if candidate.is_file():
            return candidate
    err = MissingDependencyError("litert_torch", "tflite-convert", "Producing .tflite files")
    err.hint = (
        "litert-torch downgrades typing-extensions and pydantic, so it gets an environment of "
        f"its own: `make tflite-env` (creates {LOCAL_ENV.parent.parent}), or "
        f"`python -m venv ENV && ENV/bin/pip install 'edgeloop[tflite-convert]'` and "
        f"{ENV_VAR}=ENV/bin/python; looked for " + ", ".join(str(c) for c in env_candidates())
    )
    raise err


def env_candidates(
    cwd: Path | None = None, prefix: Path | None = None, package: Path | None = None
) -> list[Path]:
    """Where a ``.venv-tflite`` may be, in order: the working directory, beside the virtual
    environment edgeloop runs in (``make`` creates both in the checkout), and the checkout the
    package was installed from in editable mode (``src/edgeloop`` -> the repository root)."""
    package = package if package is not None else Path(__file__).resolve().parents[1]
    roots = [
        (cwd if cwd is not None else Path.cwd()),
        (prefix if prefix is not None else Path(sys.prefix)).parent,
        package.parent.parent,  # .../src/edgeloop -> the repository holding src/
    ]
    seen: list[Path] = []
    for root in roots:
        path = (root / LOCAL_ENV).absolute()
        if path not in seen:
            seen.append(path)
    return seen


@dataclass(frozen=True, slots=True)
class TfliteOps:
    """The operators of a ``.tflite`` file in graph order, and those that compute on floats."""

    ops: tuple[str, ...]
    float_ops: tuple[str, ...]

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(sorted(set(self.ops)))

    def to_dict(self) -> dict[str, Any]:
        return {"ops": list(self.ops), "kinds": list(self.kinds), "float_ops": list(self.float_ops)}


def produce_tflite(
    module: torch.nn.Module,
    calibration: npt.NDArray[np.float32],
    out: Path,
    *,
    int8: bool,
) -> dict[str, Any]:
    """Convert ``module`` (eval mode) to ``out``; INT8 calibrates on ``calibration`` samples.

    Returns the worker's report (tools and versions).

    Raises:
        MissingDependencyError: no converter environment, or torch is missing here.
        ConversionError: the converter failed (its last message is carried).
    """
    torch = require("torch", "train", "Exporting a torch module for the TFLite converter")
    with tempfile.TemporaryDirectory(prefix="edgeloop-tflite-") as tmp:
        program = Path(tmp) / "model.pt2"
        example = torch.from_numpy(np.ascontiguousarray(calibration[:1], dtype=np.float32))
        try:
            torch.export.save(torch.export.export(module.eval(), (example,)), str(program))
        except Exception as exc:
            raise ConversionError(
                f"torch.export of {type(module).__name__} failed: {_first_line(exc)}",
                hint="the TFLite converter needs a module torch.export can trace",
            ) from exc
        return produce_tflite_program(
            program, calibration, out, int8=int8, label=type(module).__name__
        )


def produce_tflite_program(
    program: Path,
    calibration: npt.NDArray[np.float32],
    out: Path,
    *,
    int8: bool,
    label: str,
) -> dict[str, Any]:
    """Convert the ``torch.export`` program saved at ``program`` (batch 1) to ``out``.

    Raises:
        MissingDependencyError: no converter environment.
        ConversionError: the converter failed (its last message is carried).
    """
    python = converter_python()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgeloop-tflite-") as tmp:
        calib = Path(tmp) / "calibration.npy"
        np.save(calib, np.ascontiguousarray(calibration, dtype=np.float32))
        tmp_out = out.with_name(f".{out.name}.tmp-{os.getpid()}")
        cmd = [str(python), str(WORKER), "--program", str(program), "--out", str(tmp_out)]
        cmd += ["--calibration", str(calib), *(["--int8"] if int8 else [])]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ConversionError(f"the TFLite converter at {python} did not run: {exc}") from exc
        if done.returncode != 0 or not tmp_out.is_file():
            tmp_out.unlink(missing_ok=True)
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise ConversionError(
                f"litert-torch could not convert {label} ({'int8' if int8 else 'fp32'}): {last}",
                hint="unsupported torch ops are named above; simplify the module or use ONNX",
            )
        tmp_out.replace(out)
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    report["output"] = str(out)
    return report


def read_ops(path: Path) -> TfliteOps:
    """The operators of the ``.tflite`` at ``path`` (needs the ``tflite`` extra for the schema).

    Raises:
        MissingDependencyError: ai-edge-litert is not installed.
        ConversionError: the file is not a TFLite flatbuffer.
    """
    schema = require("ai_edge_litert.schema_py_generated", "tflite", "Reading .tflite files")
    try:
        model = schema.ModelT.InitFromPackedBuf(path.read_bytes(), 0)
    except Exception as exc:
        raise ConversionError(f"{str(path)!r} is not a TFLite model: {_first_line(exc)}") from exc
    op_name = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    type_name = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    codes = [
        op_name.get(max(c.builtinCode, c.deprecatedBuiltinCode), "CUSTOM")
        for c in model.operatorCodes
    ]
    ops: list[str] = []
    float_ops: list[str] = []
    for graph in model.subgraphs:
        for op in graph.operators:
            name = codes[op.opcodeIndex]
            ops.append(name)
            outputs = [graph.tensors[i] for i in op.outputs if i >= 0]
            if any(type_name.get(t.type) not in INTEGER_TYPES for t in outputs):
                float_ops.append(name)
    return TfliteOps(tuple(ops), tuple(float_ops))


def litert_predictor(path: Path, *, threads: int = 1) -> Predict:
    """Run ``path`` in LiteRT one sample at a time: float in, float out.

    An INT8 input is quantized with the model's own scale and zero point, an INT8 output
    dequantized, so the result compares directly with the float parent.

    Raises:
        MissingDependencyError: ai-edge-litert is not installed (``tflite`` extra).
        ConversionError: LiteRT cannot load the file.
    """
    module = require("ai_edge_litert.interpreter", "tflite", "Running .tflite files")
    try:
        interp = module.Interpreter(model_path=str(path), num_threads=threads)
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ConversionError(f"LiteRT cannot load {str(path)!r}: {_first_line(exc)}") from exc
    inp, outp = interp.get_input_details()[0], interp.get_output_details()[0]

    def run(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        rows = []
        for sample in x:
            interp.set_tensor(inp["index"], quantize(sample[None], inp))
            interp.invoke()
            rows.append(dequantize(interp.get_tensor(outp["index"]), outp)[0])
        return np.stack(rows).astype(np.float32)

    return run


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
