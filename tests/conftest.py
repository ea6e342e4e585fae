"""Fixtures shared by every test: an isolated edgeloop home and tiny real ONNX models."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.tiny_models import make_linear_onnx


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh EDGELOOP_HOME for one test, so nothing touches ~/.edgeloop."""
    path = tmp_path / "edgeloop-home"
    monkeypatch.setenv("EDGELOOP_HOME", str(path))
    monkeypatch.delenv("EDGELOOP_DB", raising=False)
    return path


@pytest.fixture
def linear_onnx(tmp_path: Path) -> Path:
    return make_linear_onnx(tmp_path / "linear.onnx")
