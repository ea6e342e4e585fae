"""`edgeloop registry publish` after train/export/bench records what those steps found: the
data hash, data set and loader options of the checkpoint, the export's parity, the bench
measurement; a report of another file is refused, nothing published."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from edgeloop.cli.app import app
from edgeloop.core.errors import ConfigError
from edgeloop.core.settings import Settings
from edgeloop.data import load_data
from edgeloop.registry import Registry


def _run(*args: str) -> dict[str, Any]:
    result = CliRunner().invoke(app, [*args, "--format", "json"])
    assert result.exit_code == 0, (result.output, result.exception)
    return dict(json.loads(result.stdout))


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model trained, exported and benchmarked by the CLI, each report saved as printed."""
    root = tmp_path_factory.mktemp("evidence")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((240, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0).astype(np.int64)
    np.savez(root / "six.npz", x=x, y=y)
    ckpt = root / "ckpt"
    _run("train", "--data", str(root / "six.npz"), "--epochs", "2", "--out", str(ckpt),
         "--no-progress")  # fmt: skip
    onnx = root / "m.onnx"
    export = _run("export", str(ckpt), "--out", str(onnx), "--samples", "64")
    (root / "export.json").write_text(json.dumps(export))
    bench = _run("bench", str(onnx), "--data", str(root / "six.npz"), "--runs", "5",
                 "--warmup", "1", "--no-isolate")  # fmt: skip
    (root / "bench.json").write_text(json.dumps(bench))
    return root


def test_publish_records_data_hash_parity_and_measurement(exported: Path, home: Path) -> None:
    args = ["registry", "publish", str(exported / "m.onnx"), "--name", "six"]
    args += ["--checkpoint", str(exported / "ckpt")]
    args += ["--export-report", str(exported / "export.json")]
    out = _run(*args, "--bench-report", str(exported / "bench.json"))
    manifest = out["manifest"]
    assert manifest["source_data_hash"] == load_data(str(exported / "six.npz")).content_hash
    export = json.loads((exported / "export.json").read_text())
    assert manifest["parity"] == export["parity"]
    assert manifest["recipe"]["data"]["spec"].endswith("six.npz")
    assert manifest["recipe"]["arch"] and manifest["recipe"]["fit"]
    [measured] = manifest["measurements"]
    bench = json.loads((exported / "bench.json").read_text())
    assert measured["latency_ms"] == bench["latency_ms"]
    assert measured["accuracy"] == bench["accuracy"]
    assert "accuracy" in manifest["metrics"]


def test_a_report_of_another_file_is_refused(exported: Path, home: Path, tmp_path: Path) -> None:
    from tests.tiny_models import make_linear_onnx

    other = make_linear_onnx(tmp_path / "other.onnx")
    args = ["registry", "publish", str(other), "--name", "other"]
    result = CliRunner().invoke(app, [*args, "--export-report", str(exported / "export.json")])
    assert isinstance(result.exception, ConfigError), result.output
    assert "it is the report of another file" in result.exception.message
    with Registry.open(Settings.load(home)) as registry:
        assert registry.list() == []
