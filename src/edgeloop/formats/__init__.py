"""Model files: export from torch, safe loading of ONNX from users, parity checks.

Importing this package does not import torch; only :func:`export_onnx` does, when called.
"""

from edgeloop.formats.onnx_info import OnnxModelInfo, inspect_onnx
from edgeloop.formats.parity import check_parity, measure_parity

__all__ = ["OnnxModelInfo", "check_parity", "inspect_onnx", "measure_parity"]
