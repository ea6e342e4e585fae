"""Fixtures of the runtime tests: tiny real ONNX models written once per module."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.runtime.runtime_models import make_fixed_onnx, make_lookup_onnx
from tests.tiny_models import make_linear_onnx


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runtime-models")


@pytest.fixture(scope="module")
def linear_path(models_dir: Path) -> Path:
    return make_linear_onnx(models_dir / "linear.onnx")


@pytest.fixture(scope="module")
def lookup_path(models_dir: Path) -> Path:
    return make_lookup_onnx(models_dir / "lookup.onnx")


@pytest.fixture(scope="module")
def fixed_path(models_dir: Path) -> Path:
    return make_fixed_onnx(models_dir / "fixed.onnx")
