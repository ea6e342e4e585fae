from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeloop.core.errors import ConfigError, ParityError
from edgeloop.core.types import Parity
from edgeloop.formats.parity import check_parity, measure_parity, onnx_predictor

torch = pytest.importorskip("torch")
nn = torch.nn

from edgeloop.formats.onnx_export import export_checked, export_onnx  # noqa: E402


def _cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 64, 10)
    ).eval()


@pytest.fixture(scope="module")
def samples() -> np.ndarray:
    return np.random.default_rng(1).random((40, 1, 8, 8), dtype=np.float32)


def test_export_names_tensors_and_frees_the_batch_axis(tmp_path: Path, samples: np.ndarray) -> None:
    result = export_checked(_cnn(), samples, tmp_path / "m.onnx", split="synthetic")
    assert result.info.inputs[0].name == "input"
    assert result.info.inputs[0].shape == (None, 1, 8, 8)
    assert result.info.outputs[0].shape == (None, 10)
    assert result.info.external_bytes == 0  # one self-contained file
    assert result.parity.max_abs_diff <= 1e-4
    assert result.parity.top1_agreement == 1.0
    run = onnx_predictor(result.info.path)
    for batch in (1, 7, 33):  # the free batch axis really is free
        assert run(samples[:batch]).shape == (batch, 10)
    assert not list(tmp_path.glob(".*tmp*"))


def test_unsupported_opset_is_refused(tmp_path: Path, samples: np.ndarray) -> None:
    with pytest.raises(ConfigError, match="opset 9"):
        export_onnx(_cnn(), samples, tmp_path / "m.onnx", opset=9)


class _ExportsSomethingElse(nn.Module):
    """Adds 1 to its logits only while being exported: the ONNX file disagrees with torch by
    exactly 1 on every sample, whatever the CPU's rounding."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.fc(x.flatten(1))
        return logits + 1.0 if torch.compiler.is_exporting() else logits


def test_parity_failure_removes_the_file(tmp_path: Path, samples: np.ndarray) -> None:
    with pytest.raises(ParityError) as info:
        export_checked(
            _ExportsSomethingElse().eval(), samples, tmp_path / "m.onnx", split="synthetic"
        )
    # The default tolerance fails on a drift of 1, so the unchecked file must not stay behind.
    assert info.value.max_abs_diff == pytest.approx(1.0, abs=1e-5)
    assert not (tmp_path / "m.onnx").exists()


def test_measure_parity_counts_disagreements() -> None:
    x = np.zeros((4, 2), np.float32)
    ref = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], np.float32)
    cand = np.array([[1, 0], [0, 1], [0, 1], [0, 1]], np.float32)
    parity = measure_parity(lambda _b: ref, lambda _b: cand, x, split="t", batch_size=4)
    assert parity.top1_agreement == 0.75
    assert parity.max_abs_diff == 1.0
    with pytest.raises(ParityError, match=r"top-1 agreement 0\.7500"):
        check_parity(parity, tolerance=2.0)


def test_scores_have_no_top1() -> None:
    x = np.zeros((3, 2), np.float32)
    parity = measure_parity(
        lambda _b: np.ones((3, 1), np.float32), lambda _b: np.ones((3, 1), np.float32), x, split="t"
    )
    assert parity.top1_agreement is None
    assert check_parity(parity, tolerance=0.0) == Parity(0.0, None, 3, "t")
