"""LOAD + SELF-TEST: open a staged model in the runtime and check its answers to sample inputs.

The check runs on the engine that will serve the model (the deployment's ``serving.engine``, or
the engine ``edgeloop tune`` recorded, when installed here; else the engine for the suffix),
against that engine's reference outputs from the document. When the document has none for it,
the model is checked on ONNX Runtime and the detail says so.

The comparison is numpy's ``allclose`` rule, per element: ``|got - expected| <= atol + rtol *
|expected|``; the result carries the largest absolute difference seen, measured.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeloop.agent.deployment import SelfTest
from edgeloop.agent.update_state import now_iso
from edgeloop.core.errors import EdgeError
from edgeloop.runtime.engine import SessionConfig
from edgeloop.runtime.engines import engine_to_serve, load_model


@dataclass(frozen=True, slots=True)
class SelfTestResult:
    passed: bool
    max_abs_diff: float | None  # None: no output could be compared (the reason is in detail)
    detail: str
    at: str
    engine: str | None = None  # the engine that ran the check (None: it never got to run)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "max_abs_diff": self.max_abs_diff,
            "detail": self.detail,
            "at": self.at,
            "engine": self.engine,
        }


def compare(
    got: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray], test: SelfTest
) -> tuple[bool, float | None, str]:
    """Whether every ``reference`` output is present, of the same shape, and within ``test``'s
    tolerance."""
    worst: float | None = None
    for name, expected in reference.items():
        if name not in got:
            return False, worst, f"output {name!r} missing; the model gives {sorted(got)}"
        actual = np.asarray(got[name])
        if actual.shape != expected.shape:
            return (
                False,
                worst,
                f"output {name!r} has shape {actual.shape}, expected {expected.shape}",
            )
        a, e = actual.astype(np.float64), expected.astype(np.float64)
        if not np.all(np.isfinite(a)):
            return False, worst, f"output {name!r} holds NaN or Inf"
        diff = np.abs(a - e)
        worst = max(worst or 0.0, float(diff.max(initial=0.0)))
        if not np.all(diff <= test.atol + test.rtol * np.abs(e)):
            return (
                False,
                worst,
                (
                    f"output {name!r} differs by up to {float(diff.max()):.3g} "
                    f"(atol {test.atol}, rtol {test.rtol})"
                ),
            )
    return True, worst, f"{len(reference)} output(s) within atol {test.atol}, rtol {test.rtol}"


def run_self_test(file: Path, test: SelfTest | None, engine: str | None = None) -> SelfTestResult:
    """Load ``file`` on the engine that will serve it (``engine`` asked for, see the module
    docstring), run ``test``'s inputs, compare (never raises EdgeError)."""
    if test is None:
        return SelfTestResult(
            False, None, "the deployment gives no self_test; the agent activates only checked "
            "models", now_iso()
        )  # fmt: skip
    try:
        chosen, fallback = engine_to_serve(engine, file)
    except EdgeError as exc:
        return SelfTestResult(False, None, f"no engine for the model: {exc.message}", now_iso())
    notes = [fallback] if fallback else []
    reference = test.reference(chosen)
    if reference is None:
        notes.append(f"checked on onnxruntime: the document has no {chosen} reference")
        chosen, reference = "onnxruntime", test.outputs
    try:
        model = load_model(file, SessionConfig(intra_op_threads=1), engine=chosen)
    except EdgeError as exc:
        return SelfTestResult(False, None, f"load failed: {exc.message}", now_iso(), chosen)
    try:
        outputs = model.run(dict(test.inputs))
    except EdgeError as exc:
        return SelfTestResult(False, None, f"inference failed: {exc.message}", now_iso(), chosen)
    except Exception as exc:  # a broken artifact may make the engine raise anything
        return SelfTestResult(False, None, f"inference failed: {exc}", now_iso(), chosen)
    finally:
        model.close()
    passed, worst, detail = compare(outputs, reference, test)
    detail = "; ".join([f"{detail} on {chosen}", *notes])
    return SelfTestResult(passed, worst, detail, now_iso(), chosen)
