"""A registry ref names the same bytes in every command: `serve`, `bench` and `optimize` take
``name:version`` as `tune` and `convert` do; an unknown ref is an error listing what exists."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tests.tiny_models import make_linear_onnx
from typer.testing import CliRunner

from edgeloop.cli.app import app
from edgeloop.cli.serve import model_paths
from edgeloop.core.errors import ConfigError, NotFoundError
from edgeloop.core.settings import Settings
from edgeloop.core.types import Manifest, TensorSpec
from edgeloop.registry import Registry
from edgeloop.serving.repository import scan


@pytest.fixture
def published(home: Path, tmp_path: Path) -> Path:
    """``lin:1`` and ``lin:2`` (different weights) in the home's registry; the data they take."""
    manifest = Manifest("lin", "onnx", (TensorSpec("input", (None, 4)),),
                        (TensorSpec("output", (None, 3)),))  # fmt: skip
    with Registry.open(Settings.load(home)) as registry:
        for seed in (1, 2):
            registry.publish(make_linear_onnx(tmp_path / f"v{seed}.onnx", seed=seed), manifest)
    x = np.random.default_rng(0).random((60, 4)).astype(np.float32)
    np.savez(tmp_path / "four.npz", x=x, y=np.arange(60) % 3)
    return tmp_path


def test_bench_measures_a_registry_ref_and_names_it(published: Path) -> None:
    args = ["bench", "lin:1", "--runs", "5", "--warmup", "1", "--no-isolate", "--format", "json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["ref"] == "lin:1" and body["model"] == "lin:1"
    assert body["size_bytes"] == (published / "v1.onnx").stat().st_size


def test_serve_links_refs_as_versions_of_their_name(published: Path, tmp_path: Path) -> None:
    root = tmp_path / "checkout"
    paths = model_paths(["lin:1", "lin:2", str(published / "v1.onnx")], None, root)
    sources = {(s.name, s.version): s.path for o in scan(paths) for s in _sources(o)}
    assert set(sources) == {("lin", "1"), ("lin", "2"), ("v1", "1")}
    assert sources["lin", "2"].read_bytes() == (published / "v2.onnx").read_bytes()


def _sources(origin: object) -> tuple[object, ...]:
    from edgeloop.serving.repository import Origin

    assert isinstance(origin, Origin)
    return origin.scan()  # type: ignore[return-value]


def test_optimize_takes_a_registry_ref_as_its_parent(published: Path) -> None:
    out = published / "lin-int8.onnx"
    args = ["optimize", "lin:2", "--method", "dynamic-int8", "--data", str(published / "four.npz")]
    result = CliRunner().invoke(app, [*args, "--out", str(out), "--runs", "5", "--format", "json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["parent_ref"] == "lin:2" and out.is_file()


@pytest.mark.parametrize("command", ["bench", "serve", "optimize"])
def test_an_unknown_ref_is_an_error_listing_what_exists(published: Path, command: str) -> None:
    optimize = ["--method", "fp16", "--data", "digits", "--out", "x.onnx"]
    extra = optimize if command == "optimize" else []
    result = CliRunner().invoke(app, [command, "lin:7", *extra])
    assert isinstance(result.exception, NotFoundError), result.output
    assert "'lin' has versions 1, 2" in result.exception.message
    result = CliRunner().invoke(app, [command, "nosuch:1", *extra])
    assert isinstance(result.exception, NotFoundError), result.output
    assert "known names: lin" in result.exception.message


def test_a_missing_file_is_not_looked_up_as_a_model(published: Path) -> None:
    result = CliRunner().invoke(app, ["bench", "gone.onnx"])
    assert isinstance(result.exception, NotFoundError), result.output
    assert "model file 'gone.onnx' does not exist" in result.exception.message


def test_optimize_refuses_a_ref_that_is_not_onnx(published: Path, home: Path) -> None:
    tfl = published / "m.tflite"
    tfl.write_bytes(b"TFL3 not a real model")
    manifest = Manifest("lin-tfl", "tflite", (TensorSpec("input", (None, 4)),),
                        (TensorSpec("output", (None, 3)),))  # fmt: skip
    with Registry.open(Settings.load(home)) as registry:
        registry.publish(tfl, manifest)
    args = ["optimize", "lin-tfl:1", "--method", "fp16", "--data", "digits", "--out", "x.onnx"]
    result = CliRunner().invoke(app, args)
    assert isinstance(result.exception, ConfigError), result.output
    assert "takes an ONNX parent" in result.exception.message


def test_an_unknown_method_points_at_the_list() -> None:
    from edgeloop.optimize.base import create

    with pytest.raises(NotFoundError) as info:
        create("no-such-method")
    assert info.value.hint is not None and "edgeloop optimize --list" in info.value.hint
