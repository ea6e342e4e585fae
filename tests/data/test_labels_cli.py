"""``edgeloop data add|label export|label import|show|export|list`` end to end, one home."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgeloop.cli.data import app
from edgeloop.core.errors import ConfigError, DataError, NotFoundError
from edgeloop.data import load_data

runner = CliRunner()
CSV = "a,b,label\n0.5,1,cat\n1.5,2,dog\n2.5,3,cat\n3.5,4,eel\n"


@pytest.fixture
def stored(home: Path, tmp_path: Path) -> Path:
    """caps:1, four unlabelled tabular samples (ids 0..3), classes cat, dog, eel."""
    source = tmp_path / "source.csv"
    source.write_text(CSV)
    result = runner.invoke(app, ["add", "caps", str(source), "--unlabelled", "--format", "json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert (body["ref"], body["samples"], body["labelled"]) == ("caps:1", 4, 0)
    return source


def answered(task: dict[str, object], choice: str | None) -> dict[str, object]:
    """A task as Label Studio exports it, with one annotation choosing ``choice``."""
    result = [{"type": "choices", "from_name": "label", "to_name": "text",
               "value": {"choices": [choice]}}] if choice else []  # fmt: skip
    annotations = [{"id": 1, "completed_by": 1, "was_cancelled": False, "result": result,
                    "created_at": "2026-01-01T00:00:00Z"}]  # fmt: skip
    return {"id": 100, "data": task["data"], "annotations": annotations}


def test_label_round_trip_through_label_studio(stored: Path, tmp_path: Path) -> None:
    tasks = tmp_path / "tasks.json"
    out = runner.invoke(app, ["label", "export", "caps:1", "--out", str(tasks)])
    assert out.exit_code == 0, out.output
    sent = json.loads(tasks.read_text())
    assert [t["data"]["sample_id"] for t in sent] == ["0", "1", "2", "3"]
    choices = ["cat", "dog", None, "wolf"]
    export = tmp_path / "export.json"
    export.write_text(json.dumps([answered(t, c) for t, c in zip(sent, choices, strict=True)]))
    result = runner.invoke(app, ["label", "import", "caps:1", str(export), "--format", "json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert (body["applied"], body["conflicting"], body["unknown"]) == (2, 0, 1)
    assert (body["unanswered"], body["parent"], body["version"]) == (1, "caps:1", "caps:2")
    shown = json.loads(runner.invoke(app, ["show", "caps:2", "--format", "json"]).stdout)
    assert (shown["labelled"], shown["unlabelled"]) == (2, 2)
    assert shown["provenance"]["parents"] == ["caps:1"]
    assert shown["class_counts"] == {"cat": 1, "dog": 1, "eel": 0}
    npz = tmp_path / "caps.npz"
    exported = runner.invoke(app, ["export", "caps:2", "--out", str(npz), "--format", "json"])
    assert json.loads(exported.stdout)["samples"] == 2
    ds = load_data(npz)
    np.testing.assert_array_equal(ds.x, np.array([[0.5, 1], [1.5, 2]], dtype=np.float32))
    assert [ds.classes[i] for i in ds.y] == ["cat", "dog"]


def test_csv_queue_round_trip(stored: Path, tmp_path: Path) -> None:
    queue = tmp_path / "queue.csv"
    out = runner.invoke(app, ["label", "export", "caps:1", "--format", "csv", "--out", str(queue)])
    assert out.exit_code == 0, out.output
    lines = queue.read_text().splitlines()
    queue.write_text("\n".join([lines[0], lines[1] + "eel", lines[2] + "eel"]) + "\n")
    result = runner.invoke(app, ["label", "import", "caps:1", str(queue), "--format", "json"])
    body = json.loads(result.stdout)
    assert (body["applied"], body["version"]) == (2, "caps:2")
    again = runner.invoke(app, ["label", "import", "caps:2", str(queue), "--format", "json"])
    body = json.loads(again.stdout)
    assert (body["applied"], body["unchanged"], body["version"]) == (0, 2, None)


def test_list_shows_bundled_and_stored(stored: Path) -> None:
    body = json.loads(runner.invoke(app, ["list", "--format", "json"]).stdout)
    assert "digits" in {row["name"] for row in body["datasets"]}
    assert [row["ref"] for row in body["stored"]] == ["caps:1"]
    table = runner.invoke(app, ["list"])
    assert table.exit_code == 0 and "caps:1" in table.stdout


def test_storing_the_same_samples_twice_is_refused(stored: Path) -> None:
    again = runner.invoke(app, ["add", "caps", str(stored), "--unlabelled"])
    assert again.exit_code != 0 and "caps:1 already holds these samples" in str(again.exception)


def test_bad_arguments_are_edge_errors(stored: Path, tmp_path: Path) -> None:
    missing = runner.invoke(app, ["show", "caps:9", "--format", "json"])
    assert isinstance(missing.exception, NotFoundError) and missing.stdout == ""
    nofile = runner.invoke(app, ["label", "import", "caps:1", str(tmp_path / "none.json")])
    assert isinstance(nofile.exception, NotFoundError)
    suffix = runner.invoke(app, ["export", "caps:1", "--out", str(tmp_path / "x.txt")])
    assert isinstance(suffix.exception, ConfigError)
    bad = tmp_path / "bad.json"
    bad.write_text('[{"id": 4, "data": {"image": "x.png"}}]')
    malformed = runner.invoke(app, ["label", "import", "caps:1", str(bad)])
    assert isinstance(malformed.exception, DataError)
    assert "task 1 has no data.sample_id" in malformed.exception.message
    usage = runner.invoke(app, ["label", "export", "caps:1", "--format", "xml", "--out", "t"])
    assert usage.exit_code == 2 and usage.exception is not None


def test_real_process_prints_no_traceback(home: Path) -> None:
    env = {**os.environ, "EDGELOOP_HOME": str(home)}
    cmd = [sys.executable, "-m", "edgeloop.cli.app", "data", "show", "caps:0"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "is not a positive integer" in done.stderr
