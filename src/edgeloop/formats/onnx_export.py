"""torch -> ONNX with named tensors, a free batch axis and a parity check on real samples.

Uses torch's default (dynamo, ``torch.export``-based) exporter, which needs ``onnxscript``. The file
is written to a temporary name and renamed, so a failed export never leaves a half-written model.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from edgeloop.core.errors import ConfigError, ConversionError, require
from edgeloop.core.types import Parity
from edgeloop.formats.onnx_info import OnnxModelInfo, inspect_onnx
from edgeloop.formats.parity import Predict, check_parity, measure_parity, onnx_predictor

if TYPE_CHECKING:
    import torch

SUPPORTED_OPSETS = range(17, 22)
DEFAULT_OPSET = 18
DEFAULT_TOLERANCE = 1e-4
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # terminal colour escapes


@dataclass(frozen=True, slots=True)
class ExportResult:
    """The exported file, what it declares, and its measured parity with the torch module."""

    info: OnnxModelInfo
    parity: Parity
    exporter: str

    def to_dict(self) -> dict[str, object]:
        return {
            "model": self.info.to_dict(),
            "parity": self.parity.to_dict(),
            "exporter": self.exporter,
        }


def export_onnx(
    module: torch.nn.Module,
    example: npt.NDArray[np.float32],
    path: str | Path,
    *,
    opset: int = DEFAULT_OPSET,
    input_name: str = "input",
    output_name: str = "output",
    dynamic_batch: bool = True,
) -> OnnxModelInfo:
    """Export ``module`` (in eval mode) to one self-contained ONNX file at ``path``.

    Raises:
        ConfigError: an unsupported opset or an example without a batch axis.
        ConversionError: the exporter failed (the message carries its first line).
    """
    torch = require("torch", "train", "Exporting a torch model")
    require("onnxscript", "train", "torch's ONNX exporter")
    if opset not in SUPPORTED_OPSETS:
        raise ConfigError(
            f"opset {opset} is not supported; "
            f"choose {SUPPORTED_OPSETS.start}-{SUPPORTED_OPSETS.stop - 1}",
            hint=f"the default {DEFAULT_OPSET} runs on ONNX Runtime, OpenVINO and TensorRT",
        )
    if example.ndim < 2 or len(example) < 1:
        raise ConfigError(f"the example input has shape {example.shape}; expected (batch, ...)")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    module = module.eval()
    # Two samples at least: a batch of one lets the tracer specialise the batch axis to 1.
    sample = torch.from_numpy(np.ascontiguousarray(np.concatenate([example[:1], example[:1]])))
    dynamic = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
    try:
        with _quiet_exporter():
            torch.onnx.export(
                module,
                (sample,),
                str(tmp),
                input_names=[input_name],
                output_names=[output_name],
                opset_version=opset,
                dynamic_shapes=dynamic,
                external_data=False,
                dynamo=True,
                verbose=False,
            )
        tmp.replace(target)
    except Exception as exc:
        # torch colours parts of its messages with ANSI escapes: plain text for a terminal.
        text = _ANSI.sub("", str(exc)).strip()
        raise ConversionError(
            f"torch -> ONNX export of {type(module).__name__} failed: "
            f"{text.splitlines()[0] if text else type(exc).__name__}",
            hint="check the module runs on the example input; unsupported ops are named above",
        ) from exc
    finally:
        tmp.unlink(missing_ok=True)
    return inspect_onnx(target)


def export_checked(
    module: torch.nn.Module,
    x_check: npt.NDArray[np.float32],
    path: str | Path,
    *,
    split: str,
    tolerance: float = DEFAULT_TOLERANCE,
    opset: int = DEFAULT_OPSET,
) -> ExportResult:
    """Export, then compare ONNX Runtime's outputs with torch's on ``x_check`` (real samples).

    Raises:
        ParityError: max abs diff above ``tolerance`` or any top-1 disagreement; the file is
            removed so no unchecked model is left behind.
    """
    import torch

    info = export_onnx(module, x_check, path, opset=opset)

    def reference(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        with torch.inference_mode():
            out = module(torch.from_numpy(x))
        return np.asarray(out.numpy(), dtype=np.float32)

    candidate: Predict = onnx_predictor(info.path)
    parity = measure_parity(reference, candidate, x_check, split=split)
    try:
        check_parity(parity, tolerance=tolerance)
    except Exception:
        info.path.unlink(missing_ok=True)
        raise
    return ExportResult(
        info=info, parity=parity, exporter=f"torch.onnx (dynamo) {torch.__version__}"
    )


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter prints progress to stdout and warns about its own internals.

    stdout must carry only a command's result (``--format json``), so its chatter goes to stderr,
    its log records below ERROR are dropped, and warnings raised inside it are not ours to act on.
    """
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
            warnings.simplefilter("ignore")
            yield None
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
