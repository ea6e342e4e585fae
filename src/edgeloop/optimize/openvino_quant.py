"""NNCF post-training quantization, for the side-by-side with ONNX Runtime's static INT8.

NNCF (OpenVINO's Neural Network Compression Framework) quantizes an ONNX model into QDQ ONNX
(``nncf-int8``, a registered optimizer like the others) or an OpenVINO model into OpenVINO IR
(:func:`quantize_openvino_ir`), from the same calibration samples our ``static-int8`` uses.
Both need the optional ``nncf`` package (and ``openvino`` for IR); they are imported only here,
when called.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Any, Self

import numpy as np
import numpy.typing as npt
import onnx

from edgeloop.core.errors import ConfigError, ConversionError, require
from edgeloop.data.dataset import Splits
from edgeloop.optimize.base import ModelSource, OptimizerBase, Variant, register
from edgeloop.optimize.calibration import calibration_samples, reader_for
from edgeloop.optimize.graph import census, parse_choice

EXTRA = "openvino"


class NncfPreset(StrEnum):
    """NNCF's presets: ``performance`` symmetric everywhere, ``mixed`` asymmetric activations."""

    PERFORMANCE = "performance"
    MIXED = "mixed"


class NncfModelType(StrEnum):
    """NNCF's ``model_type``: ``transformer`` adds SmoothQuant and transformer-specific scopes
    (it acts on MatMul; a conv net has none, so on one it is measured, not assumed, to be moot)."""

    DEFAULT = "default"
    TRANSFORMER = "transformer"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """NNCF draws progress bars on stdout and logs at INFO; stdout carries only results."""
    logger = logging.getLogger("nncf")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield None
    finally:
        logger.setLevel(level)


def _nncf_call(
    nncf: Any, model: Any, x: npt.NDArray[np.float32], preset: NncfPreset, **kw: Any
) -> Any:
    items = [x[i : i + 1] for i in range(len(x))]
    try:
        with _quiet():
            return nncf.quantize(
                model,
                nncf.Dataset(items, kw.pop("transform", None)),
                preset=getattr(nncf.QuantizationPreset, preset.name),
                subset_size=len(items),
                **kw,
            )
    except Exception as exc:  # NNCF raises its own and the backends' errors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConversionError(f"NNCF quantization failed: {first}") from exc


@register("nncf-int8")
class NncfInt8(OptimizerBase):
    """NNCF post-training INT8 of an ONNX model into QDQ ONNX (calibration: train split)."""

    name = "nncf-int8"
    needs_data = True

    def __init__(
        self,
        *,
        preset: str = "performance",
        samples: int = 256,
        fast_bias_correction: bool = True,
        model_type: str = "default",
    ) -> None:
        self.preset = parse_choice(NncfPreset, preset, "preset")
        if isinstance(samples, bool) or not isinstance(samples, int) or not 1 <= samples <= 100_000:
            raise ConfigError(f"samples {samples!r} is out of range; expected an int 1..100000")
        self.samples = samples
        if not isinstance(fast_bias_correction, bool):
            raise ConfigError(
                f"fast_bias_correction {fast_bias_correction!r} must be true or false"
            )
        self.fast_bias_correction = fast_bias_correction
        self.model_type = parse_choice(NncfModelType, model_type, "model_type")

    def fit(self, data: Splits) -> Self:
        super().fit(data)
        self.calibration_x_ = calibration_samples(data.train, self.samples)
        return self

    def apply(self, source: ModelSource, out: Path) -> Variant:
        """Quantize ``source.onnx`` with NNCF into ``out`` (QDQ ONNX).

        Raises:
            ConfigError: not fitted.
            DataError: calibration samples of the wrong shape (both shapes named).
            MissingDependencyError: nncf is not installed.
            ConversionError: NNCF failed.
        """
        if not hasattr(self, "calibration_x_"):
            raise ConfigError(
                f"method {self.name!r} was not fitted: call fit(splits) before apply()",
                hint="on the command line, pass --data",
            )
        reader = reader_for(source.onnx, self.calibration_x_)
        nncf = require("nncf", EXTRA, "NNCF quantization")
        name = reader.input_name
        quantized = _nncf_call(
            nncf,
            onnx.load(str(source.onnx)),
            reader.x,
            self.preset,
            transform=lambda item: {name: item},
            fast_bias_correction=self.fast_bias_correction,
            **(
                {"model_type": nncf.ModelType.TRANSFORMER}
                if self.model_type is NncfModelType.TRANSFORMER
                else {}
            ),
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
        try:
            onnx.save(quantized, str(tmp))
            tmp.replace(out)
        finally:
            tmp.unlink(missing_ok=True)
        return self._variant(source, out, nncf)

    def _variant(self, source: ModelSource, out: Path, nncf: Any) -> Variant:
        import onnxruntime as ort

        child = census(out)
        parent_bytes, child_bytes = source.onnx.stat().st_size, out.stat().st_size
        return Variant(
            method=self.name,
            path=out,
            settings=self.get_params(),
            tools={
                "nncf": str(nncf.__version__),
                "onnx": onnx.__version__,
                "onnxruntime": str(ort.__version__),
            },
            parity=self.measure_parity(source.onnx, out),
            parent=source.onnx,
            checkpoint=source.checkpoint,
            extra={
                "size_bytes": child_bytes,
                "parent_size_bytes": parent_bytes,
                "size_ratio": parent_bytes / child_bytes,
                "census": child.to_dict(),
            },
        )


def quantize_openvino_ir(
    model: Path, calibration: npt.NDArray[np.float32], out_xml: Path, *, preset: str = "performance"
) -> dict[str, str]:
    """NNCF INT8 through OpenVINO's own model: read ``model``, quantize, save IR at ``out_xml``.

    Returns the tool versions. Raises:
        MissingDependencyError: nncf or openvino is not installed.
        ConversionError: OpenVINO cannot read the model, or NNCF failed.
    """
    nncf = require("nncf", EXTRA, "NNCF quantization")
    ov = require("openvino", EXTRA, "OpenVINO IR quantization")
    chosen = parse_choice(NncfPreset, preset, "preset")
    try:
        ov_model = ov.Core().read_model(str(model))
    except RuntimeError as exc:
        raise ConversionError(f"OpenVINO cannot read {str(model)!r}: {exc}") from exc
    quantized = _nncf_call(nncf, ov_model, calibration, chosen)
    out_xml.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantized, str(out_xml))
    return {"nncf": str(nncf.__version__), "openvino": str(ov.get_version())}
