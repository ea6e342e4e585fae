"""Checkpoints: weights-only files that rebuild the same module, and refuse tampered ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from edgeloop.core.errors import ConfigError, NotFoundError, UntrustedArtifactError
from edgeloop.data.dataset import Splits
from edgeloop.training.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from edgeloop.training.fit import FitConfig
from edgeloop.training.metrics import Metrics, evaluate
from edgeloop.training.zoo import ArchConfig, build, deployable

ARCH = ArchConfig("cnn", (1, 8, 8), 10, width=4)


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    module = build(ARCH).eval()
    # Move BatchNorm's running stats off their defaults so buffers are really round-tripped.
    with torch.no_grad():
        for name, buf in module.named_buffers():
            if name.endswith("running_mean"):
                buf.uniform_(-1, 1)
    metrics = Metrics("test", 5, ARCH.task, accuracy=0.8, macro_f1=0.75)
    folder = save_checkpoint(tmp_path / "ckpt", module, ARCH, FitConfig(epochs=3), metrics)
    return folder, module


def test_round_trip_rebuilds_a_module_with_identical_outputs(
    saved: tuple[Path, torch.nn.Module],
) -> None:
    folder, module = saved
    loaded, arch = load_checkpoint(folder)
    assert arch == ARCH and not loaded.training
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), module(x))
    info = read_checkpoint(folder / "model.json")
    assert info.fit == FitConfig(epochs=3)
    assert info.metrics is not None and info.metrics.accuracy == 0.8
    assert info.torch_version == torch.__version__


def test_weights_file_is_a_plain_state_dict(saved: tuple[Path, torch.nn.Module]) -> None:
    folder, module = saved
    state = torch.load(folder / "model.pt", weights_only=True)
    assert set(state) == set(module.state_dict())


def test_a_trained_model_keeps_its_test_accuracy_and_data_set(
    tmp_path: Path, blob_splits: Splits
) -> None:
    from edgeloop.training.fit import fit

    arch = ArchConfig("mlp", (4,), 3, width=8)
    result = fit(arch, blob_splits, FitConfig(epochs=3), progress=False)
    save_checkpoint(
        tmp_path,
        result.module,
        arch,
        result.config,
        result.test_metrics,
        dataset=blob_splits.train,
    )
    loaded, _ = load_checkpoint(tmp_path)
    assert evaluate(loaded, blob_splits.test) == result.test_metrics
    info = read_checkpoint(tmp_path)
    assert info.classes == ("c0", "c1", "c2")
    assert info.dataset_hash == blob_splits.train.content_hash


def test_missing_checkpoint_is_not_found_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="nowhere"):
        load_checkpoint(tmp_path / "nowhere")


def test_missing_weights_are_not_found(saved: tuple[Path, torch.nn.Module]) -> None:
    folder, _ = saved
    (folder / "model.pt").unlink()
    with pytest.raises(NotFoundError, match="model.pt"):
        load_checkpoint(folder)


def test_truncated_weights_are_untrusted(saved: tuple[Path, torch.nn.Module]) -> None:
    folder, _ = saved
    data = (folder / "model.pt").read_bytes()
    (folder / "model.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(UntrustedArtifactError, match="model.pt"):
        load_checkpoint(folder)


def _rehash(folder: Path) -> None:
    """What an attacker who can write both files does: make the recorded sha256 fit again."""
    import hashlib

    meta = json.loads((folder / "model.json").read_text())
    meta["weights_sha256"] = hashlib.sha256((folder / "model.pt").read_bytes()).hexdigest()
    (folder / "model.json").write_text(json.dumps(meta))


def test_pickled_module_in_place_of_weights_is_refused(
    saved: tuple[Path, torch.nn.Module],
) -> None:
    folder, module = saved
    torch.save(module, folder / "model.pt")  # a whole pickled module: code, not just tensors
    _rehash(folder)
    with pytest.raises(UntrustedArtifactError, match="plain state_dict"):
        load_checkpoint(folder)


def test_corrupt_config_is_untrusted_naming_the_file(saved: tuple[Path, torch.nn.Module]) -> None:
    folder, _ = saved
    (folder / "model.json").write_text("{not json")
    with pytest.raises(UntrustedArtifactError, match="model.json"):
        load_checkpoint(folder)
    (folder / "model.json").write_text(json.dumps({"arch": ARCH.to_dict()}))
    with pytest.raises(UntrustedArtifactError, match="not an edgeloop checkpoint"):
        load_checkpoint(folder)


def test_config_that_does_not_match_the_weights_is_a_config_error(
    saved: tuple[Path, torch.nn.Module],
) -> None:
    folder, _ = saved
    meta = json.loads((folder / "model.json").read_text())
    meta["arch"]["width"] = 8
    (folder / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="do not match the arch config"):
        load_checkpoint(folder)
    meta["arch"]["arch"] = "vgg"
    (folder / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="model.json.*'vgg'"):
        load_checkpoint(folder)


def test_saving_a_module_that_is_not_the_arch_is_refused(tmp_path: Path) -> None:
    module = build(ARCH)
    with pytest.raises(ConfigError, match="Probabilities"):
        save_checkpoint(tmp_path, deployable(module, ARCH), ARCH, None, None)
    assert not (tmp_path / "model.pt").exists()


def test_saving_into_a_file_path_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="file"):
        save_checkpoint(blocker, build(ARCH), ARCH, None, None)
