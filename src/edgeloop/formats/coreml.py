"""Core ML ``.mlpackage`` (ML program) from a torch module with coremltools (``coreml`` extra).

coremltools converts and saves on Linux, but prediction needs the Core ML framework of macOS.
So the package is checked by reading its spec back — inputs, outputs, their types and shapes,
the ops of the program and the weight file's size — and recorded as "not run: needs macOS".
The ML program computes in float16 (coremltools' default for ``mlprogram``, what the Neural
Engine runs), which the spec shows as ``cast`` ops around float32 inputs and outputs.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from edgeloop.core.errors import ConversionError, require

if TYPE_CHECKING:
    import torch

EXTRA = "coreml"
NOT_RUN = "not run: Core ML prediction needs macOS"


@dataclass(frozen=True, slots=True)
class CoreMlSpec:
    """What the saved package declares, read back from its spec."""

    inputs: tuple[tuple[str, tuple[int, ...], str], ...]
    outputs: tuple[tuple[str, tuple[int, ...], str], ...]
    ops: tuple[str, ...]
    spec_version: int
    weight_bytes: int
    compute_precision: str

    def to_dict(self) -> dict[str, Any]:
        def tensors(ts: tuple[tuple[str, tuple[int, ...], str], ...]) -> list[dict[str, Any]]:
            return [{"name": n, "shape": list(s), "dtype": d} for n, s, d in ts]

        return {
            "inputs": tensors(self.inputs),
            "outputs": tensors(self.outputs),
            "ops": list(self.ops),
            "spec_version": self.spec_version,
            "weight_bytes": self.weight_bytes,
            "compute_precision": self.compute_precision,
        }


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    # coremltools prints "Failed to load ..." for its macOS-only parts on stdout, which must
    # carry only a command's result, and draws progress bars on stderr over edgeloop's own;
    # its failures still arrive as exceptions.
    chatter = io.StringIO()
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(chatter),
        contextlib.redirect_stderr(chatter),
    ):
        warnings.simplefilter("ignore")
        yield


def convert_to_coreml(
    module: torch.nn.Module, example: npt.NDArray[np.float32], out: Path
) -> CoreMlSpec:
    """Convert ``module`` (batch 1, like ``example[:1]``) to ``out`` (a ``.mlpackage`` folder).

    Raises:
        MissingDependencyError: coremltools (``coreml`` extra) or torch is missing.
        ConversionError: coremltools cannot convert an op (named in its message), or the
            spec read back does not declare the expected input.
    """
    torch = require("torch", "train", "Exporting a torch module for Core ML")
    x = torch.from_numpy(np.ascontiguousarray(example[:1], dtype=np.float32))
    with _quiet():
        try:
            program = torch.export.export(module.eval(), (x,))
        except Exception as exc:
            raise _failed(type(module).__name__, exc) from exc
    return _convert(program, tuple(int(d) for d in x.shape), out, type(module).__name__)


def convert_program_to_coreml(
    program: Path, example: npt.NDArray[np.float32], out: Path
) -> CoreMlSpec:
    """Convert the ``torch.export`` program saved at ``program`` (batch 1) to ``out``.

    Raises:
        MissingDependencyError: coremltools or torch is missing.
        ConversionError: the program cannot be loaded or converted (the op is named).
    """
    torch = require("torch", "train", "Loading a torch program for Core ML")
    with _quiet():
        try:
            loaded = torch.export.load(str(program))
        except Exception as exc:
            raise _failed(program.name, exc) from exc
    return _convert(loaded, (1, *example.shape[1:]), out, program.name)


def _convert(program: Any, shape: tuple[int, ...], out: Path, label: str) -> CoreMlSpec:
    with _quiet():
        ct = require("coremltools", EXTRA, "Converting to Core ML")
        try:
            model = ct.convert(
                program.run_decompositions({}),
                outputs=[ct.TensorType(name="output")],
                convert_to="mlprogram",
                minimum_deployment_target=ct.target.iOS16,
                compute_precision=ct.precision.FLOAT16,
            )
        except Exception as exc:
            raise _failed(label, exc) from exc
        out.parent.mkdir(parents=True, exist_ok=True)
        model.save(str(out))
    return validate_package(out, expected_input=shape)


def _failed(label: str, exc: Exception) -> ConversionError:
    text = str(exc).strip().splitlines()
    return ConversionError(
        f"coremltools cannot convert {label}: {text[0] if text else type(exc).__name__}",
        hint="unsupported torch ops are named above",
    )


def validate_package(path: Path, *, expected_input: tuple[int, ...]) -> CoreMlSpec:
    """Read ``path``'s spec back and check its first input has ``expected_input`` shape.

    Raises:
        ConversionError: the package cannot be read or declares another input.
    """
    with _quiet():
        ct = require("coremltools", EXTRA, "Reading Core ML packages")
        try:
            spec = ct.utils.load_spec(str(path))
        except Exception as exc:
            raise ConversionError(f"{path.name} is not a readable Core ML package: {exc}") from exc
    dtype_name = ct.proto.FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name

    def tensors(features: Any) -> tuple[tuple[str, tuple[int, ...], str], ...]:
        return tuple(
            (
                f.name,
                tuple(int(d) for d in f.type.multiArrayType.shape),
                dtype_name(f.type.multiArrayType.dataType).lower(),
            )
            for f in features
        )

    inputs, outputs = tensors(spec.description.input), tensors(spec.description.output)
    if not inputs or inputs[0][1] != expected_input:
        raise ConversionError(
            f"{path.name} declares inputs {inputs}; expected shape {list(expected_input)}"
        )
    ops: set[str] = set()
    for function in spec.mlProgram.functions.values():
        for block in function.block_specializations.values():
            ops.update(op.type for op in block.operations)
    weights = sum(f.stat().st_size for f in path.rglob("weight*.bin"))
    precision = "float16" if "cast" in ops else "float32"
    return CoreMlSpec(
        inputs, outputs, tuple(sorted(ops)), int(spec.specificationVersion), weights, precision
    )
