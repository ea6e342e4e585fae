"""Fixtures for the server tests: tiny real models (helpers live in tests/serving/harness.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.serving.models import make_cnn_onnx, make_repository, make_slow_onnx
from tests.tiny_models import make_linear_onnx


@pytest.fixture
def cnn(tmp_path: Path) -> Path:
    return make_cnn_onnx(tmp_path / "cnn.onnx")


@pytest.fixture
def linear(tmp_path: Path) -> Path:
    return make_linear_onnx(tmp_path / "linear.onnx")


@pytest.fixture
def slow(tmp_path: Path) -> Path:
    return make_slow_onnx(tmp_path / "slow.onnx")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository root with model ``clf`` in versions 1 and 2 (different weights)."""
    make_repository(tmp_path / "repo", "clf", {1: 1, 2: 2})
    return tmp_path / "repo"
