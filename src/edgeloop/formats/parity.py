"""Parity: how closely a converted model reproduces its parent's outputs on real samples."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edgeloop.core.errors import ParityError
from edgeloop.core.types import Parity

Predict = Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]]


def onnx_predictor(path: str | Path, *, threads: int = 1) -> Predict:
    """A function running the ONNX model at ``path`` on CPU (first input, first output)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        out = session.run(None, {name: x})[0]
        return np.asarray(out, dtype=np.float32)

    return run


def measure_parity(
    reference: Predict,
    candidate: Predict,
    x: npt.NDArray[np.float32],
    *,
    split: str,
    batch_size: int = 256,
) -> Parity:
    """Run both predictors on ``x`` in batches; compare outputs element-wise and by arg-max.

    Top-1 agreement is only defined when the output has a class axis with more than one entry.
    """
    diffs: list[float] = []
    agree = 0
    classes = True
    for start in range(0, len(x), batch_size):
        batch = np.ascontiguousarray(x[start : start + batch_size], dtype=np.float32)
        ref, cand = reference(batch), candidate(batch)
        if ref.shape != cand.shape:
            raise ParityError(
                f"output shapes differ: parent {ref.shape}, converted {cand.shape}",
                max_abs_diff=float("inf"),
                top1_agreement=None,
                tolerance=0.0,
            )
        diffs.append(float(np.max(np.abs(ref.astype(np.float64) - cand))) if ref.size else 0.0)
        classes = ref.ndim == 2 and ref.shape[1] > 1
        if classes:
            agree += int(np.sum(ref.argmax(axis=1) == cand.argmax(axis=1)))
    return Parity(
        max_abs_diff=max(diffs, default=0.0),
        top1_agreement=agree / len(x) if classes and len(x) else None,
        samples=len(x),
        split=split,
    )


def check_parity(parity: Parity, *, tolerance: float, min_top1: float = 1.0) -> Parity:
    """Return ``parity`` if within bounds, else raise :class:`ParityError` carrying the numbers."""
    top1_ok = parity.top1_agreement is None or parity.top1_agreement >= min_top1
    if parity.max_abs_diff <= tolerance and top1_ok:
        return parity
    top1 = "n/a" if parity.top1_agreement is None else f"{parity.top1_agreement:.4f}"
    raise ParityError(
        f"converted model differs from its parent on {parity.samples} {parity.split} samples: "
        f"max abs diff {parity.max_abs_diff:.3g} (tolerance {tolerance:.3g}), "
        f"top-1 agreement {top1} (required {min_top1:.4f})",
        max_abs_diff=parity.max_abs_diff,
        top1_agreement=parity.top1_agreement,
        tolerance=tolerance,
        hint="try another opset (--opset), or raise --tolerance if this drift is acceptable",
    )
