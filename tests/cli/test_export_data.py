"""`edgeloop export` checks parity on the data the checkpoint was trained on, as recorded by
`edgeloop train`; data of another shape is refused before torch's exporter runs.

Before, ``--data`` defaulted to digits: a checkpoint trained on a user CSV met 1x8x8 images and
the exporter failed with pages of torch tracebacks and raw ANSI escapes in the error.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgeloop.cli.app import app
from edgeloop.core.errors import ConfigError

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint trained (2 epochs) on a 5-feature user CSV."""
    root = tmp_path_factory.mktemp("export-data")
    x = np.random.default_rng(0).random((90, 5))
    rows = [",".join(f"{v:.4f}" for v in r) + f",{int(r[0] > 0.5)}" for r in x]
    csv = root / "user.csv"
    csv.write_text("a,b,c,d,e,label\n" + "\n".join(rows) + "\n")
    out = root / "runs" / "user_csv"
    args = ["train", "--data", str(csv), "--epochs", "2", "--out", str(out), "--no-progress"]
    result = CliRunner().invoke(app, [*args, "--format", "json"])
    assert result.exit_code == 0, result.output
    return out


def test_train_records_its_data_and_export_uses_it(checkpoint: Path, tmp_path: Path) -> None:
    recorded = json.loads((checkpoint / "model.json").read_text())["data"]
    assert Path(recorded).is_absolute() and recorded.endswith("user.csv")
    out = tmp_path / "u.onnx"
    result = CliRunner().invoke(app, ["export", str(checkpoint), "--out", str(out)])
    assert result.exit_code == 0, result.output
    body = CliRunner().invoke(
        app, ["export", str(checkpoint), "--out", str(out), "--format", "json"]
    )
    assert json.loads(body.stdout)["parity"]["split"] == "user test"


def test_data_of_another_shape_is_refused_before_exporting(
    checkpoint: Path, tmp_path: Path
) -> None:
    out = tmp_path / "u.onnx"
    result = CliRunner().invoke(
        app, ["export", str(checkpoint), "--out", str(out), "--data", "digits"]
    )
    assert isinstance(result.exception, ConfigError)
    assert "shape 1x8x8" in result.exception.message and "takes 5" in result.exception.message
    assert not out.exists()
