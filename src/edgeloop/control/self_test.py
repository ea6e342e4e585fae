"""The self-test block of a deployment: seeded sample inputs and the outputs ONNX Runtime gives.

The agent runs the same inputs through the artifact it staged and compares with these outputs
before it switches to it. Inputs are drawn from a fixed seed (numpy's PCG64), shaped by the
model's own input signature with every free axis set to :data:`FREE_AXIS`.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import numpy as np

from edgeloop.core.errors import EdgeError
from edgeloop.runtime.engine import SessionConfig
from edgeloop.runtime.engines import load_model

SEED = 20240607
FREE_AXIS = 4  # a small batch: exercises the batch axis without slowing the agent's check
ATOL = 1e-3
RTOL = 1e-3


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
    block = {
        "inputs": {name: encode(a) for name, a in inputs.items()},
        "outputs": {name: encode(np.asarray(a)) for name, a in outputs.items()},
        "atol": ATOL,
        "rtol": RTOL,
        "seed": SEED,
    }
    return block, f"computed with ONNX Runtime on {len(inputs)} seeded input(s)"
