"""The export stage: a trained torch module to ONNX, checked for parity on real samples.

The parity check (:func:`edgeloop.formats.onnx_export.export_checked`) compares ONNX Runtime's
outputs with torch's on the samples given; a file that fails it is removed, never left behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from edgeloop.formats.onnx_export import ExportResult

if TYPE_CHECKING:
    from torch import nn

    from edgeloop.training.zoo import ArchConfig


@dataclass(frozen=True, slots=True)
class Exported:
    """The ONNX file and its export record (graph info, parity, exporter)."""

    onnx: Path
    result: ExportResult

    def to_dict(self) -> dict[str, Any]:
        return {"export": self.result.parity.to_dict()}


def export(
    module: nn.Module,
    arch: ArchConfig,
    x_check: npt.NDArray[np.float32],
    path: Path,
    *,
    split: str,
) -> Exported:
    """Export the deployable form of ``module`` (its inference head on) to ``path``.

    Raises:
        ConversionError: the exporter failed. ParityError: outputs differ beyond tolerance
            (the file is removed).
    """
    from edgeloop.formats.onnx_export import export_checked
    from edgeloop.training.zoo import deployable

    result = export_checked(deployable(module, arch), x_check, path, split=split)
    return Exported(result.info.path, result)
