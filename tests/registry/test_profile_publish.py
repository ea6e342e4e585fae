"""Registration makes the reference profile: `registry publish --checkpoint` profiles the
training split (inputs, the model's probabilities, labels), stores it as a content-addressed
artifact listed in the manifest; a profile that does not fit the model's input is refused,
nothing published; manifests without a profile read as before."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from edgeloop.cli.app import app
from edgeloop.core.errors import ConfigError, NotFoundError
from edgeloop.core.settings import Settings
from edgeloop.core.types import Manifest, ProfileRecord, TensorSpec
from edgeloop.monitoring import ReferenceProfile, build_profile
from edgeloop.registry import Registry


def _run(*args: str) -> dict[str, Any]:
    result = CliRunner().invoke(app, [*args, "--format", "json"])
    assert result.exit_code == 0, (result.output, result.exception)
    return dict(json.loads(result.stdout))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("profiled")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((240, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0).astype(np.int64)
    np.savez(root / "six.npz", x=x, y=y)
    _run("train", "--data", str(root / "six.npz"), "--epochs", "2", "--out", str(root / "ckpt"),
         "--no-progress")  # fmt: skip
    _run("export", str(root / "ckpt"), "--out", str(root / "m.onnx"), "--samples", "64")
    return root


def test_publish_with_checkpoint_ships_a_profile(trained: Path, home: Path, tmp_path: Path) -> None:
    out = _run("registry", "publish", str(trained / "m.onnx"), "--name", "six",
               "--checkpoint", str(trained / "ckpt"))  # fmt: skip
    record = ProfileRecord.from_dict(out["manifest"]["profile"])
    assert record.rows == 168  # the 70 % training split of 240 rows
    with Registry.open(Settings.load(home)) as registry:
        _, path = registry.profile(registry.show(registry.list()[0].ref).ref)
        assert path is not None
        data = path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == record.sha256 and len(data) == record.size_bytes
    profile = ReferenceProfile.from_bytes(data)
    assert profile.sample_shape == (6,) and profile.n == 168
    assert profile.outputs is not None and profile.outputs.num_classes == 3
    assert profile.outputs.reference_accuracy is not None  # the labels were used
    assert profile.source == "train" and profile.outputs.source == "val"
    shown = _run("registry", "show", "six:1")
    assert shown["manifest"]["profile"]["sha256"] == record.sha256
    written = _run("registry", "profile", "six:1", "--out", str(tmp_path / "p.npz"))
    assert written["sha256"] == record.sha256
    assert (tmp_path / "p.npz").read_bytes() == data


def test_registration_profiles_the_outputs_on_the_validation_split(
    trained: Path, home: Path
) -> None:
    """The pipeline's register(): inputs from the training split, the model's outputs (priors,
    confidence reference, accuracy) from the validation split, not from the rows it fitted."""
    import onnxruntime as ort

    from edgeloop.data import load_data, stratified_split
    from edgeloop.formats.onnx_info import inspect_onnx
    from edgeloop.monitoring.profile import QUANTILES
    from edgeloop.pipeline.register import register
    from edgeloop.registry.profiles import profile_model

    model = trained / "m.onnx"
    splits = stratified_split(load_data(str(trained / "six.npz")), val=0.15, test=0.15, seed=0)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])

    def answers(x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        return np.asarray(session.run(None, {session.get_inputs()[0].name: x})[0], np.float64)

    val, train = answers(splits.val.x), answers(splits.train.x)
    info = inspect_onnx(model)
    manifest = Manifest("six", "onnx", info.inputs, info.outputs)
    done = register(model, manifest, Settings.load(home), reference=splits.train,
                    held_out=splits.val)  # fmt: skip
    with Registry.open(Settings.load(home)) as registry:
        path = registry.profile(done.ref)[1]
        assert path is not None
        profile = ReferenceProfile.from_bytes(path.read_bytes())
    out = profile.outputs
    assert out is not None and profile.source == "train" and out.source == "val"
    assert profile.n == len(splits.train) == 168  # the inputs: the training split
    held = np.quantile(val.max(axis=1), QUANTILES)
    assert np.allclose(out.confidence_quantiles, held, atol=1e-6)
    assert not np.allclose(out.confidence_quantiles, np.quantile(train.max(axis=1), QUANTILES))
    predicted = val.argmax(axis=1)
    assert out.reference_accuracy == pytest.approx(float((predicted == splits.val.y).mean()))
    assert np.allclose(out.class_priors, np.bincount(predicted, minlength=3) / len(predicted))
    # No validation rows (a split with val=0): the outputs come from the training rows.
    x, y = splits.train.x, splits.train.y
    alone = ReferenceProfile.from_bytes(profile_model(model, x, y, held_out=(x[:0], y[:0])))
    assert alone.outputs is not None and alone.outputs.source == "train"


def test_a_profile_of_another_shape_is_refused(home: Path, linear_onnx: Path) -> None:
    other = build_profile(np.random.default_rng(1).standard_normal((50, 3)))
    manifest = Manifest("lin", "onnx", (TensorSpec("x", (None, 4)),), (TensorSpec("y", (None, 2)),))
    with Registry.open(Settings.load(home)) as registry:
        with pytest.raises(ConfigError) as caught:
            registry.publish(linear_onnx, manifest, profile=other.to_bytes())
        assert registry.list() == []
    assert "shape 3" in caught.value.message and "?x4" in caught.value.message


def test_a_listed_profile_without_its_bytes_is_dropped(home: Path, linear_onnx: Path) -> None:
    record = ProfileRecord("ab" * 32, 10, 1, 50, None)
    manifest = Manifest("lin", "onnx", (TensorSpec("x", (None, 4)),), (TensorSpec("y", (None, 2)),),
                        profile=record)  # fmt: skip
    with Registry.open(Settings.load(home)) as registry:
        version = registry.publish(linear_onnx, manifest)
        assert version.manifest.profile is None
        assert registry.profile(version.ref)[1] is None


def test_manifests_without_a_profile_keep_their_form() -> None:
    manifest = Manifest("lin", "onnx", (TensorSpec("x", (None, 4)),), (TensorSpec("y", (None, 2)),))
    assert "profile" not in manifest.to_dict()
    assert Manifest.from_dict(manifest.to_dict()) == manifest
    record = ProfileRecord("cd" * 32, 1234, 1, 100, "digits")
    listed = Manifest.from_dict(manifest.to_dict() | {"profile": record.to_dict()})
    assert listed.profile == record and Manifest.from_dict(listed.to_dict()) == listed


def test_removing_the_version_removes_its_profile(home: Path, linear_onnx: Path) -> None:
    x = np.random.default_rng(2).standard_normal((50, 4))
    manifest = Manifest("lin", "onnx", (TensorSpec("x", (None, 4)),), (TensorSpec("y", (None, 2)),))
    with Registry.open(Settings.load(home)) as registry:
        version = registry.publish(linear_onnx, manifest, profile=build_profile(x).to_bytes())
        assert version.manifest.profile is not None
        sha = version.manifest.profile.sha256
        assert registry.artifacts.exists(sha)
        registry.remove(version.ref)
        assert not registry.artifacts.exists(sha)


def test_a_failed_publish_leaves_no_profile_behind(home: Path, tmp_path: Path) -> None:
    profile = build_profile(np.random.default_rng(3).standard_normal((50, 4))).to_bytes()
    sha = hashlib.sha256(profile).hexdigest()
    manifest = Manifest("lin", "onnx", (TensorSpec("x", (None, 4)),), (TensorSpec("y", (None, 2)),))
    with Registry.open(Settings.load(home)) as registry:
        with pytest.raises(NotFoundError):
            registry.publish(tmp_path / "missing.onnx", manifest, profile=profile)
        assert registry.list() == [] and not registry.artifacts.exists(sha)
