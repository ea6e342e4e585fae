"""The self-test block of a deployment: seeded sample inputs and the outputs ONNX Runtime gives.

The agent runs the same inputs through the artifact it staged and compares with these outputs
before it switches to it. Inputs are drawn from a fixed seed (numpy's PCG64), shaped by the
model's own input signature with every free axis set to :data:`FREE_AXIS`.

Engines legitimately differ on quantized models (OpenVINO and ONNX Runtime round an INT8 model's
intermediate tensors differently: the digits CNN's static INT8 variant gives softmax outputs up
to 0.055 apart), so the block also carries, under ``engines``, the outputs of every other ONNX
engine installed here. An agent that serves the model on such an engine checks it there,
against that engine's outputs.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import numpy as np

from edgeloop.core.errors import EdgeError
from edgeloop.runtime.engine import SessionConfig
from edgeloop.runtime.engines import get_engine, load_model

SEED = 20240607
FREE_AXIS = 4  # a small batch: exercises the batch axis without slowing the agent's check
ATOL = 1e-3
RTOL = 1e-3
OTHER_ENGINES = ("openvino",)  # ONNX engines besides ONNX Runtime that may serve the artifact


def encode(array: np.ndarray) -> dict[str, Any]:
    """``{"dtype", "shape", "b64"}``: raw little-endian bytes in C order."""
    a = np.ascontiguousarray(array)
    little = a.astype(a.dtype.newbyteorder("<"))
    return {
        "dtype": str(a.dtype),
        "shape": list(a.shape),
        "b64": base64.b64encode(little.tobytes()).decode(),
    }


def sample_inputs(specs: Any, seed: int = SEED) -> dict[str, np.ndarray]:
    """Seeded inputs for tensor specs (objects with ``name``, ``shape``, ``dtype``)."""
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for spec in specs:
        shape = tuple(FREE_AXIS if d is None else int(d) for d in spec.shape)
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f":
            feeds[spec.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[spec.name] = rng.integers(0, 2, shape).astype(dtype)
        else:
            feeds[spec.name] = rng.integers(0, 10, shape).astype(dtype)
    return feeds


def compute(artifact: Path, model_format: str) -> tuple[dict[str, Any] | None, str]:
    """The self-test block for ``artifact``, or None with the reason it could not be made.

    A model ONNX Runtime cannot load or run gets no block: the agent refuses to activate an
    unchecked model, so such a deployment is stopped by its first wave.
    """
    if model_format != "onnx":
        return None, f"no self-test for format {model_format!r}: only ONNX is run here"
    try:
        model = load_model(artifact, SessionConfig(intra_op_threads=1), engine="onnxruntime")
    except EdgeError as exc:
        return None, f"ONNX Runtime could not load the artifact: {exc.message}"
    try:
        inputs = sample_inputs(model.inputs)
        outputs = model.run(inputs)
    except Exception as exc:  # a broken artifact may make the engine raise anything
        return None, f"ONNX Runtime could not run the artifact: {exc}"
    finally:
        model.close()
    engines, skipped = {}, []
    for name in OTHER_ENGINES:
        got, why = _outputs_on(name, artifact, inputs)
        if got is None:
            skipped.append(f"{name}: {why}")
        else:
            engines[name] = {"outputs": {k: encode(np.asarray(a)) for k, a in got.items()}}
    block = {
        "inputs": {name: encode(a) for name, a in inputs.items()},
        "outputs": {name: encode(np.asarray(a)) for name, a in outputs.items()},
        "engines": engines,
        "atol": ATOL,
        "rtol": RTOL,
        "seed": SEED,
    }
    note = f"computed with ONNX Runtime{''.join(f' and {n}' for n in engines)} on "
    note += f"{len(inputs)} seeded input(s)"
    return block, note + (f"; no reference from {'; '.join(skipped)}" if skipped else "")


def _outputs_on(
    engine: str, artifact: Path, inputs: dict[str, np.ndarray]
) -> tuple[dict[str, np.ndarray] | None, str]:
    """``engine``'s outputs for ``inputs``, or None with the reason there are none."""
    ok, reason = get_engine(engine).available()
    if not ok:
        return None, reason
    try:
        model = load_model(artifact, SessionConfig(intra_op_threads=1), engine=engine)
    except EdgeError as exc:
        return None, f"could not load the artifact: {exc.message}"
    try:
        return {k: np.asarray(v) for k, v in model.run(inputs).items()}, "ran"
    except Exception as exc:  # an engine may fail on an artifact another engine runs
        return None, f"could not run the artifact: {exc}"
    finally:
        model.close()
