"""OpenVINO IR (``.xml`` + ``.bin``) from ONNX, and running it on OpenVINO's CPU plugin.

Weights are saved in FP32 (``compress_to_fp16=False``): OpenVINO's default would halve them
on disk, and a conversion should change the format, not the numbers. At run time the CPU
plugin picks its own inference precision — bf16 on CPUs with AVX512-BF16 or AMX — so every
run records the precision the plugin reports, and :func:`openvino_predictor` can force f32.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edgeloop.core.errors import ConversionError, require
from edgeloop.formats.parity import Predict

EXTRA = "openvino"


@dataclass(frozen=True, slots=True)
class OpenVinoRunner:
    """A compiled IR: ``predict`` plus the precision the plugin says it computes in."""

    predict: Predict
    precision: str
    version: str


def convert_to_ir(onnx_path: Path, xml: Path) -> tuple[Path, Path]:
    """Convert ``onnx_path`` to ``xml`` and its ``.bin``; returns both paths.

    Raises:
        MissingDependencyError: openvino is not installed.
        ConversionError: OpenVINO cannot convert an operator (named in the message).
    """
    ov = require("openvino", EXTRA, "Converting to OpenVINO IR")
    try:
        model = ov.convert_model(str(onnx_path))
    except Exception as exc:  # OpenVINO raises its own OpConversionFailure / RuntimeError
        raise ConversionError(
            f"OpenVINO cannot convert {onnx_path.name}: {openvino_reason(str(exc))}",
            hint="the operators named are not supported by OpenVINO's ONNX frontend",
        ) from exc
    xml.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(xml), compress_to_fp16=False)
    return xml, xml.with_suffix(".bin")


def openvino_predictor(
    xml: Path, *, threads: int = 1, precision: str | None = None
) -> OpenVinoRunner:
    """Compile ``xml`` for CPU (latency hint, one stream); ``precision`` e.g. ``"f32"`` forces it.

    Raises:
        ConversionError: the plugin cannot compile the model.
    """
    ov = require("openvino", EXTRA, "Running OpenVINO IR")
    config: dict[str, Any] = {
        "INFERENCE_NUM_THREADS": threads,
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": 1,
    }
    if precision is not None:
        config["INFERENCE_PRECISION_HINT"] = precision
    try:
        compiled = ov.Core().compile_model(str(xml), "CPU", config)
    except RuntimeError as exc:
        raise ConversionError(
            f"OpenVINO cannot compile {xml.name}: {openvino_reason(str(exc))}"
        ) from exc
    request = compiled.create_infer_request()
    output = compiled.output(0)

    def run(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return np.array(request.infer({0: x})[output], dtype=np.float32)

    ran = compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
    return OpenVinoRunner(run, ran, str(ov.get_version()))


def openvino_reason(text: str) -> str:
    """The informative line of an OpenVINO error: the operators it could not convert (pure)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    summary = [line.lstrip("- ") for line in lines if line.startswith(("-- No conv", "-- Conv"))]
    if summary:
        return "; ".join(summary)
    plain = [line for line in lines if not line.startswith(("Exception from", "Check '"))]
    return (plain or lines or ["unknown error"])[-1]
