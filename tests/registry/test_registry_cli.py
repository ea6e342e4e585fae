"""``edgeloop registry``: publish / list / show / rm through Typer's CliRunner, JSON and table."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from edgeloop.cli import output
from edgeloop.cli.registry import app
from edgeloop.core.errors import ConfigError, NotFoundError, UntrustedArtifactError
from edgeloop.core.types import Manifest

runner = CliRunner()


def _json(args: list[str]) -> dict[str, Any]:
    result = runner.invoke(app, [*args, "--format", "json"])
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    parsed = json.loads(result.stdout)  # exactly one JSON object on stdout
    assert isinstance(parsed, dict)
    return parsed


def _fails(args: list[str]) -> BaseException:
    result = runner.invoke(app, args)
    assert result.exit_code != 0
    assert result.exception is not None
    return result.exception


def test_publish_reads_io_from_the_onnx_graph(home: Path, linear_onnx: Path) -> None:
    out = _json(["publish", str(linear_onnx), "--name", "lin"])
    assert out["ref"] == "lin:1"
    assert out["size_bytes"] == linear_onnx.stat().st_size
    assert out["manifest"]["inputs"] == [{"name": "input", "shape": [None, 4], "dtype": "float32"}]
    assert out["manifest"]["outputs"][0]["shape"] == [None, 3]
    assert (home / "registry.db").is_file()


def test_list_show_rm_round_trip(home: Path, linear_onnx: Path) -> None:
    _json(["publish", str(linear_onnx), "--name", "fp32"])
    _json(["publish", str(linear_onnx), "--name", "int8", "--parent", "fp32"])
    listed = _json(["list"])
    assert [v["ref"] for v in listed["versions"]] == ["fp32:1", "int8:1"]
    assert [v["ref"] for v in _json(["list", "--name", "int8"])["versions"]] == ["int8:1"]
    shown = _json(["show", "int8"])
    assert shown["lineage"] == ["int8:1", "fp32:1"]
    assert shown["manifest"]["parent"] == "fp32:1"
    assert Path(shown["artifact_path"]).read_bytes() == linear_onnx.read_bytes()
    removed = _json(["rm", "int8:1", "--yes"])
    assert removed["removed"]["ref"] == "int8:1"
    assert removed["artifact_deleted"] is False  # fp32:1 still uses the same bytes
    assert _json(["rm", "fp32:1", "--yes"])["artifact_deleted"] is True
    assert _json(["list"]) == {"versions": []}


def test_publish_with_a_manifest_file(
    home: Path, linear_onnx: Path, tmp_path: Path, full_manifest: Callable[..., Manifest]
) -> None:
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(full_manifest("digits-mlp").to_dict()))
    out = _json(["publish", str(linear_onnx), "--manifest", str(path)])
    assert out["manifest"] == full_manifest("digits-mlp").to_dict()
    shown = _json(["show", "digits-mlp:1"])
    assert shown["manifest"]["measurements"][0]["accuracy"] == 0.9375


def test_table_output_for_people(
    home: Path,
    linear_onnx: Path,
    tmp_path: Path,
    full_manifest: Callable[..., Manifest],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The shared console fixed its width when it was made; widen it so no cell wraps.
    monkeypatch.setattr(output.out_console, "width", 200)
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(full_manifest("lin").to_dict()))
    runner.invoke(app, ["publish", str(linear_onnx), "--manifest", str(path)])
    listed = runner.invoke(app, ["list"])
    assert listed.exit_code == 0
    assert "lin:1" in listed.stdout
    shown = runner.invoke(app, ["show", "lin:1"])
    assert shown.exit_code == 0
    assert "onnxruntime/CPUExecutionProvider" in shown.stdout
    assert "0.9375 (digits:test)" in shown.stdout
    assert "no meter: RAPL not readable" in shown.stdout  # power n/a, with its reason


def test_show_missing_names_it(home: Path, linear_onnx: Path) -> None:
    _json(["publish", str(linear_onnx), "--name", "lin"])
    error = _fails(["show", "lin:4"])
    assert isinstance(error, NotFoundError)
    assert "'lin:4'" in error.message


def test_bad_ref_is_a_config_error(home: Path) -> None:
    error = _fails(["show", "lin:zero"])
    assert isinstance(error, ConfigError)
    assert "'lin:zero'" in error.message


def test_rm_requires_yes_and_leaves_the_version(home: Path, linear_onnx: Path) -> None:
    _json(["publish", str(linear_onnx), "--name", "lin"])
    error = _fails(["rm", "lin:1"])
    assert isinstance(error, ConfigError)
    assert "'lin:1'" in error.message
    assert [v["ref"] for v in _json(["list"])["versions"]] == ["lin:1"]


def test_publish_non_onnx_without_manifest_is_refused(home: Path, tmp_path: Path) -> None:
    model = tmp_path / "model.tflite"
    model.write_bytes(b"TFL3")
    error = _fails(["publish", str(model), "--name", "m"])
    assert isinstance(error, ConfigError)
    assert "model.tflite" in error.message
    assert _json(["list"]) == {"versions": []}


def test_publish_a_broken_onnx_file_is_refused(home: Path, tmp_path: Path) -> None:
    model = tmp_path / "broken.onnx"
    model.write_bytes(b"definitely not protobuf")
    error = _fails(["publish", str(model), "--name", "m"])
    assert isinstance(error, UntrustedArtifactError)
    assert "broken.onnx" in error.message
    assert _json(["list"]) == {"versions": []}


@pytest.mark.parametrize("content", ["{not json", '{"name": "m"}'])
def test_publish_with_a_bad_manifest_file(
    home: Path, linear_onnx: Path, tmp_path: Path, content: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    error = _fails(["publish", str(linear_onnx), "--manifest", str(path)])
    assert isinstance(error, ConfigError)
    assert "bad.json" in error.message
