"""`edgeloop fleet publish NAME:VERSION`: one model identity from laptop to fleet.

A local registry version reaches a real control plane process under the same name and version,
with its manifest (data hash, measurements, parity, lineage); publishing it again is a no-op;
anything that would make the fleet's ref another model, or number it differently, is refused
with nothing published."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.control.process import ControlProcess, control_process
from tests.tiny_models import make_linear_onnx
from typer.testing import CliRunner

from edgeloop.cli.app import app
from edgeloop.core.errors import ConfigError, ConflictError, NotFoundError
from edgeloop.core.settings import Settings
from edgeloop.core.types import Latency, Manifest, Measurement, ModelRef, Parity, TensorSpec
from edgeloop.registry import Registry
from edgeloop.registry.store import ModelVersion
from edgeloop.sdk.control_client import ALREADY_THERE, ControlClient, publish_plan

ADMIN = "test-admin-token-0123456789abcdef"
DATA_HASH = "ab" * 32


def _manifest(name: str, parent: ModelRef | None = None) -> Manifest:
    # Fixed inputs of a round trip, not readings reported anywhere.
    measurement = Measurement(
        model=name, engine="onnxruntime", provider="CPUExecutionProvider", batch_size=1,
        runs=50, latency_ms=Latency(0.1, 0.2, 0.3), throughput_per_s=1000.0, peak_rss_mb=None,
        size_bytes=275, accuracy=0.9375, accuracy_split="four test", power_w=None,
        power_source="no meter", cpu="x86_64", threads=1,
    )  # fmt: skip
    return Manifest(
        name, "onnx", (TensorSpec("input", (None, 4)),), (TensorSpec("output", (None, 3)),),
        source_data_hash=DATA_HASH, dataset="four.npz", recipe={"scale": "standard"},
        parity=Parity(1e-7, 1.0, 60, "test"), measurements=(measurement,), parent=parent,
    )  # fmt: skip


def _publish_local(home: Path, file: Path, manifest: Manifest) -> ModelVersion:
    with Registry.open(Settings.load(home)) as registry:
        return registry.publish(file, manifest)


@pytest.fixture(scope="module")
def ctl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlProcess]:
    with control_process(tmp_path_factory.mktemp("ctl") / "home", admin_token=ADMIN) as proc:
        yield proc


def _fleet(ctl: ControlProcess) -> dict[str, str]:
    with ControlClient(ctl.url, ADMIN) as client:
        return {str(row["ref"]): str(row["sha256"]) for row in client.models()}


def _cli(ctl: ControlProcess, *args: str) -> Any:
    control = ["--control", ctl.url, "--token", ADMIN, "--format", "json"]
    return CliRunner().invoke(app, ["fleet", "publish", *args, *control])


def test_a_ref_keeps_its_name_version_and_manifest_on_the_fleet(
    ctl: ControlProcess, home: Path, tmp_path: Path
) -> None:
    v1 = _publish_local(home, make_linear_onnx(tmp_path / "a.onnx", seed=1), _manifest("motions"))
    v2 = _publish_local(
        home,
        make_linear_onnx(tmp_path / "b.onnx", seed=2),
        _manifest("motions", parent=ModelRef("motions", 1)),
    )
    # Its parent is not there yet: refused, nothing published.
    result = _cli(ctl, "motions:2")
    assert isinstance(result.exception, NotFoundError), result.output
    assert "parent motions:1" in result.exception.message
    assert "--with-parents" in (result.exception.hint or "")
    assert not any(ref.startswith("motions:") for ref in _fleet(ctl))

    result = _cli(ctl, "motions:2", "--with-parents")
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert [s["ref"] for s in body["steps"]] == ["motions:1", "motions:2"]
    fleet = _fleet(ctl)
    assert fleet["motions:1"] == v1.artifact_sha256
    assert fleet["motions:2"] == v2.artifact_sha256
    # What the control plane stored is the local manifest: data hash, measurements, lineage.
    with Registry.open(Settings.load(Path(ctl.ready["home"]))) as theirs:
        stored = theirs.show(ModelRef("motions", 2))
    assert stored.manifest == v2.manifest
    assert stored.manifest.source_data_hash == DATA_HASH
    assert stored.manifest.parent == ModelRef("motions", 1)
    assert stored.manifest.measurements == v2.manifest.measurements

    again = _cli(ctl, "motions:2")  # idempotent: the same bytes under the same ref
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["status"] == ALREADY_THERE


def test_another_model_under_the_same_ref_is_refused(
    ctl: ControlProcess, home: Path, tmp_path: Path
) -> None:
    with ControlClient(ctl.url, ADMIN) as client:
        client.publish_model(make_linear_onnx(tmp_path / "fleet.onnx", seed=5), _manifest("kws"))
    before = _fleet(ctl)
    _publish_local(home, make_linear_onnx(tmp_path / "mine.onnx", seed=6), _manifest("kws"))
    result = _cli(ctl, "kws:1")
    assert isinstance(result.exception, ConflictError), result.output
    assert "kws:1 on the fleet is another model" in result.exception.message
    assert _fleet(ctl) == before


def test_a_version_the_control_plane_would_renumber_is_refused(
    ctl: ControlProcess, home: Path, tmp_path: Path
) -> None:
    for seed in (1, 2, 3):
        _publish_local(home, make_linear_onnx(tmp_path / f"g{seed}.onnx", seed=seed),
                       _manifest("gap"))  # fmt: skip
    result = _cli(ctl, "gap:3")
    assert isinstance(result.exception, ConflictError), result.output
    assert "would publish gap:3 as gap:1" in result.exception.message
    assert "edgeloop fleet publish gap:1" in (result.exception.hint or "")
    assert not any(ref.startswith("gap:") for ref in _fleet(ctl))


def test_an_unknown_ref_lists_what_exists_and_flags_need_a_file(
    ctl: ControlProcess, home: Path, tmp_path: Path
) -> None:
    _publish_local(home, make_linear_onnx(tmp_path / "u.onnx"), _manifest("known"))
    result = _cli(ctl, "known:4")
    assert isinstance(result.exception, NotFoundError), result.output
    assert "'known' has versions 1" in result.exception.message
    result = _cli(ctl, "known:1", "--name", "other")
    assert isinstance(result.exception, ConfigError), result.output
    assert "own name and manifest" in result.exception.message


def _version(name: str, version: int, sha: str, parent: ModelRef | None = None) -> ModelVersion:
    from datetime import UTC, datetime

    return ModelVersion(name, version, _manifest(name, parent), sha, 1, datetime.now(UTC))


def _row(name: str, version: int, sha: str) -> dict[str, Any]:
    return {"name": name, "version": version, "ref": f"{name}:{version}", "sha256": sha}


def test_the_plan_publishes_only_the_next_number_with_a_matching_parent() -> None:
    a, b = "a" * 64, "b" * 64
    assert publish_plan(_version("m", 1, a), None, []) == "publish"
    assert publish_plan(_version("m", 1, a), None, [_row("m", 1, a)]) == ALREADY_THERE
    parent = ModelRef("m", 1)
    assert publish_plan(_version("m", 2, b, parent), a, [_row("m", 1, a)]) == "publish"
    with pytest.raises(ConflictError, match="another model than the local m:1"):
        publish_plan(_version("m", 2, b, parent), b, [_row("m", 1, a)])
    with pytest.raises(ConflictError, match="cannot get its number back"):
        publish_plan(_version("m", 1, b), None, [_row("m", 2, a)])
