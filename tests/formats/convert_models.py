"""Tiny real torch models and the ConvertSource the conversion tests run on."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgeloop.formats.convert import ConvertSource
from edgeloop.formats.onnx_export import export_onnx

SHAPE = (1, 8, 8)


class Signed(nn.Module):
    """A classifier whose graph holds torch.sign: TFLite's SIGN, which TFLM has no kernel for."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.fc(torch.sign(x - 0.5).flatten(1)), dim=1)


def tiny_cnn(seed: int = 0) -> nn.Module:
    """Conv -> ReLU -> max-pool -> linear -> softmax on 1x8x8 inputs, 3 classes."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 3),
        nn.Softmax(dim=1),
    ).eval()


def samples(n: int, seed: int) -> np.ndarray:
    """Fixed test inputs in [0, 1] (the seed fixes the inputs, never a reported figure)."""
    return np.random.default_rng(seed).random((n, *SHAPE), dtype=np.float32)


def tiny_source(
    folder: Path, module: nn.Module | None = None, *, keep_module: bool = True
) -> ConvertSource:
    """The parent ONNX of ``module`` in ``folder`` and 64 calibration / 32 check samples.

    Labels are the parent's own predictions, so accuracy measures agreement with it.
    """
    module = module if module is not None else tiny_cnn()
    x_cal, x_check = samples(64, 1), samples(32, 2)
    onnx = export_onnx(module, x_check, folder / "tiny.onnx").path
    with torch.inference_mode():
        labels = module(torch.from_numpy(x_check)).numpy().argmax(axis=1)
    return ConvertSource(
        onnx=onnx,
        name="tiny",
        calibration=x_cal,
        x_check=x_check,
        y_check=labels.astype(np.int64),
        split="fixed test inputs (32)",
        module=module if keep_module else None,
    )


def run_folder(factory: pytest.TempPathFactory) -> Path:
    """A folder every pytest-xdist worker of this test run sees (the run's own base folder)."""
    base = factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def share_tiny_int8(artifact: Path, factory: pytest.TempPathFactory) -> None:
    """Offer the tiny CNN's full-INT8 file (``tiny_source()`` converted) to later modules."""
    target = run_folder(factory) / "tiny-cnn.int8.tflite"
    partial = target.with_name(f".{target.name}.{os.getpid()}")
    shutil.copyfile(artifact, partial)
    partial.replace(target)  # atomic: a reader sees the whole file or none


def tiny_int8(folder: Path, factory: pytest.TempPathFactory) -> Path:
    """The tiny CNN as full-INT8 .tflite: ``produce_tflite(tiny_cnn(), samples(64, 1))``.

    A litert-torch conversion costs 15-80 s on two shared cores; when the conversion tests of
    this run already made this very file (same module, same 64 calibration samples, same
    call), it is taken from them instead of converting it a second time.
    """
    from edgeloop.formats.tflite import produce_tflite

    shared = run_folder(factory) / "tiny-cnn.int8.tflite"
    if shared.is_file():
        return shared
    out = folder / "tiny-int8.tflite"
    produce_tflite(tiny_cnn(), samples(64, 1), out, int8=True)
    return out


def inverse_onnx(path: Path) -> Path:
    """softmax(flatten(inverse(x))) over 3x3 matrices with ONNX Runtime's com.microsoft.Inverse.

    ONNX Runtime runs it; OpenVINO has no conversion rule for it and TensorRT's parser no kernel.
    """
    from onnx import TensorProto, helper, save

    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [1, -1])
    graph = helper.make_graph(
        [
            helper.make_node("Inverse", ["input"], ["inv"], domain="com.microsoft"),
            helper.make_node("Reshape", ["inv", "shape"], ["flat"]),
            helper.make_node("Softmax", ["flat"], ["output"], axis=-1),
        ],
        "inverse",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 3])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 9])],
        [shape],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    )
    model.ir_version = 9  # what ONNX Runtime 1.2x reads
    save(model, str(path))
    return path
