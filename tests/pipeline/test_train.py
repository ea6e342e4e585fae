"""The train stage with a warm start: what a retraining job calls with the deployed checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeloop.core.errors import ConfigError
from edgeloop.pipeline.data import Split, load, split
from edgeloop.pipeline.train import Trained, train

pytest.importorskip("torch")
pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def digits() -> Split:
    return split(load("digits").dataset, seed=0)


def _train(data: Split, out: Path, arch: str, warm: Path | None = None, epochs: int = 2) -> Trained:
    ds = data.splits.train  # same name, sample shape and classes as the whole set
    return train(data.splits, ds, arch, out, epochs=epochs, seed=0, warm_start=warm, progress=False)


def test_warm_start_continues_from_the_checkpoints_weights(digits: Split, tmp_path: Path) -> None:
    cold = _train(digits, tmp_path / "cold", "mlp")
    warm = _train(digits, tmp_path / "warm", "mlp", warm=cold.checkpoint)

    # Same seed and data: only the starting weights differ, so the warm run's first epoch starts
    # where the cold run ended and must end below the cold run's first epoch.
    assert warm.result.history[0].val_loss < cold.result.history[0].val_loss
    assert warm.result.history[0].val_loss <= cold.result.history[-1].val_loss * 1.05
    assert (warm.checkpoint / "model.json").is_file()


def test_warm_start_from_another_architecture_is_refused_naming_both(
    digits: Split, tmp_path: Path
) -> None:
    mlp = _train(digits, tmp_path / "mlp", "mlp", epochs=1)
    with pytest.raises(ConfigError, match=r"is mlp for input \(1, 8, 8\).*this run trains cnn"):
        _train(digits, tmp_path / "cnn", "cnn", warm=mlp.checkpoint, epochs=1)
    assert not (tmp_path / "cnn").exists()  # refused before anything was written
