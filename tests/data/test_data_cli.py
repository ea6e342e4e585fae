"""``edgeloop data list|show`` through Typer's CliRunner: one JSON object on stdout."""

from __future__ import annotations

import json
from pathlib import Path

from tests.data.samples import write_text
from typer.testing import CliRunner

from edgeloop.cli.data import app
from edgeloop.core.errors import DataError, NotFoundError

runner = CliRunner()


def test_list_json_names_every_bundled_set() -> None:
    result = runner.invoke(app, ["list", "--format", "json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    rows = {row["name"]: row for row in body["datasets"]}
    assert set(rows) == {"digits", "basic-motions", "mitdb-anomaly", "yahoo-anomaly"}
    assert rows["digits"]["samples"] == 1797 and rows["digits"]["sample_shape"] == [1, 8, 8]
    assert all(Path(p).is_file() for row in rows.values() for p in row["sources"])


def test_list_table_shows_names() -> None:
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 0 and "basic-motions" in result.stdout


def test_show_bundled_json() -> None:
    result = runner.invoke(app, ["show", "basic-motions", "--format", "json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["samples"] == 80 and body["sample_shape"] == [6, 100]
    assert body["modality"] == "signal" and body["task"] == "classification"
    assert body["class_counts"]["Walking"] == 20
    assert len(body["content_hash"]) == 64 and body["cleaning"] is None


def test_show_user_csv_with_clean_reports_counts(tmp_path: Path) -> None:
    path = write_text(tmp_path / "m.csv", "a,b,label\n1,2,x\n1,2,x\n,3,y\n4,5,y\n")
    result = runner.invoke(app, ["show", str(path), "--clean", "--format", "json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["samples"] == 4 and body["source"] == str(path)
    cleaning = body["cleaning"]
    assert cleaning["duplicates_dropped"] == 1 and cleaning["missing_values"] == 1
    assert cleaning["samples_out"] == 3 and cleaning["class_counts"] == {"x": 1, "y": 2}


def test_show_table_with_clean(tmp_path: Path) -> None:
    path = write_text(tmp_path / "m.csv", "a,label\n1,x\n2,y\n")
    result = runner.invoke(app, ["show", str(path), "--clean"])
    assert result.exit_code == 0 and "duplicates dropped" in result.stdout


def test_show_errors_are_edge_errors(tmp_path: Path) -> None:
    missing = runner.invoke(app, ["show", "no-such-set", "--format", "json"])
    assert isinstance(missing.exception, NotFoundError)
    assert missing.stdout == ""
    bad = write_text(tmp_path / "bad.csv", "a,label\n1\n")
    ragged = runner.invoke(app, ["show", str(bad)])
    assert isinstance(ragged.exception, DataError)
    assert f"{bad}:2" in ragged.exception.message
