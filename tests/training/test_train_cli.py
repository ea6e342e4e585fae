"""`edgeloop train` through Typer's CliRunner on its own app (the lead wires it into app.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from edgeloop.cli.train import train
from edgeloop.core.errors import ConfigError, NotFoundError

app = typer.Typer()
app.command()(train)


def test_json_mode_prints_one_object_and_writes_a_checkpoint_that_scores_the_same(
    tmp_path: Path,
) -> None:
    from edgeloop.data import load_data, stratified_split
    from edgeloop.training import evaluate, load_checkpoint

    out = tmp_path / "digits-cnn"
    args = ["--data", "digits", "--epochs", "2", "--width", "8", "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--format", "json", "--no-progress"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["arch"]["arch"] == "cnn"  # picked from the image modality
    assert report["epochs_run"] == 2 and report["dataset"]["samples"] == 1797
    assert report["checkpoint"] == str(out)
    assert "training cnn on digits" in result.stderr
    module, _ = load_checkpoint(out)
    splits = stratified_split(load_data("digits"), val=0.15, test=0.15, seed=0)
    assert evaluate(module, splits.test).accuracy == report["test_accuracy"]


def test_table_mode_shows_the_figures(tmp_path: Path) -> None:
    args = ["--data", "digits", "--epochs", "1", "--width", "4", "--out", str(tmp_path / "m")]
    result = CliRunner().invoke(app, [*args, "--arch", "mlp", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "test accuracy" in result.stdout and "trained mlp on digits" in result.stdout


@pytest.mark.parametrize(
    ("args", "error", "bad"),
    [
        (["--epochs", "0"], ConfigError, "epochs 0"),
        (["--optimizer", "rmsprop"], ConfigError, "'rmsprop'"),
        (["--arch", "resnet"], ConfigError, "'resnet'"),
        (["--lr", "-1"], ConfigError, "-1.0"),
    ],
)
def test_bad_flags_fail_before_loading_data(
    tmp_path: Path, args: list[str], error: type[Exception], bad: str
) -> None:
    # The data set does not exist: a flag error must come first, without touching the data.
    base = ["--data", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "m")]
    result = CliRunner().invoke(app, [*base, *args])
    assert isinstance(result.exception, error)
    assert bad in str(result.exception)


def test_missing_data_is_not_found(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["--data", str(tmp_path / "missing.csv")])
    assert isinstance(result.exception, NotFoundError)
    assert "missing.csv" in str(result.exception)
