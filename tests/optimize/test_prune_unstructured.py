"""prune-unstructured and the sparsity / compressed-size figures it reports."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from tests.optimize.torch_parents import digits_splits, one_torch_thread, trained_parent
from tests.tiny_models import make_linear_onnx

from edgeloop.core.errors import ConfigError, NotFoundError, UntrustedArtifactError
from edgeloop.data.dataset import Splits
from edgeloop.optimize import ModelSource, Variant, create
from edgeloop.optimize.sparsity import (
    CompressedSize,
    SparsityCount,
    compressed_size,
    onnx_weight_sparsity,
    zstd_size,
)

torch = pytest.importorskip("torch")
pytest.importorskip("zstandard")


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    yield from one_torch_thread()


@pytest.fixture(scope="module")
def splits() -> Splits:
    return digits_splits()


@pytest.fixture(scope="module")
def parent(tmp_path_factory: pytest.TempPathFactory, splits: Splits) -> ModelSource:
    # Width 16: enough weights (~15k) that the file's fixed overhead does not hide the zeros.
    return trained_parent(tmp_path_factory.mktemp("parent"), splits, width=16)


@pytest.fixture(scope="module")
def pruned(
    tmp_path_factory: pytest.TempPathFactory, parent: ModelSource, splits: Splits
) -> Variant:
    out = tmp_path_factory.mktemp("pruned") / "sparse.onnx"
    optimizer = create("prune-unstructured", sparsity=0.8, steps=2, epochs=1)
    return optimizer.fit(splits).apply(parent, out)


def test_measured_sparsity_equals_the_requested_one(pruned: Variant) -> None:
    count = onnx_weight_sparsity(pruned.path)
    assert count.total > 10_000
    # round(0.8 * total) weights are zeroed, so the share is 0.8 to within one weight.
    assert abs(count.sparsity - 0.8) <= 1 / count.total
    assert pruned.extra["onnx_weight_sparsity"] == count.to_dict()
    assert pruned.extra["weight_sparsity"]["zeros"] == count.zeros


def test_compressed_size_shrinks_and_raw_size_does_not(
    pruned: Variant, parent: ModelSource
) -> None:
    before, after = compressed_size(parent.onnx), compressed_size(pruned.path)
    assert after.zstd_bytes * 2 < before.zstd_bytes
    # A dense file with zeros is about as large as before: the benefit is compression only.
    assert abs(after.raw_bytes - before.raw_bytes) < 0.05 * before.raw_bytes
    assert pruned.extra["zstd_smaller_x"] == pytest.approx(before.zstd_bytes / after.zstd_bytes)
    assert any("no speed-up" in note for note in pruned.notes)


def test_the_schedule_fine_tunes_each_round(pruned: Variant) -> None:
    rounds = pruned.extra["rounds"]
    assert [r["target_sparsity"] for r in rounds] == pytest.approx([0.7, 0.8])
    assert all(r["fine_tune_epochs_run"] == 1 for r in rounds)


def test_layer_scope_prunes_each_layer_to_the_same_share(
    parent: ModelSource, splits: Splits, tmp_path: Path
) -> None:
    from edgeloop.optimize.prune_unstructured import prunable
    from edgeloop.optimize.pruned_checkpoint import load_module

    optimizer = create("prune-unstructured", sparsity=0.5, scope="layer", steps=1, epochs=0)
    variant = optimizer.fit(splits).apply(parent, tmp_path / "layer.onnx")
    assert variant.checkpoint is not None
    module, _ = load_module(variant.checkpoint)
    for layer in prunable(module):
        w = layer.weight.detach().numpy()
        assert abs(float((w == 0).mean()) - 0.5) <= 1 / w.size


def test_schedule_is_cubic_and_ends_at_the_target() -> None:
    from edgeloop.optimize.prune_unstructured import cubic_schedule

    steps = cubic_schedule(0.8, 4)
    assert steps[-1] == pytest.approx(0.8)
    assert steps[0] == pytest.approx(0.8 * (1 - 0.75**3))
    assert all(a < b for a, b in itertools.pairwise(steps))


def test_masks_zero_exactly_the_requested_count_even_with_ties() -> None:
    from edgeloop.optimize.prune_unstructured import PruneScope, masks_for

    layer = torch.nn.Linear(10, 10)
    with torch.no_grad():
        layer.weight.zero_()  # all 100 weights tie
    (mask,) = masks_for([layer], 0.37, PruneScope.GLOBAL)
    assert int((mask == 0).sum()) == 37


@pytest.mark.parametrize(
    ("params", "bad"),
    [
        ({"sparsity": 1.5}, "sparsity 1.5"),
        ({"sparsity": 0}, "sparsity 0"),
        ({"scope": "row"}, "scope 'row'"),
        ({"steps": 0}, "steps 0"),
        ({"epochs": -1}, "epochs -1"),
        ({"lr": 0.0}, "learning rate 0.0"),
    ],
)
def test_bad_params_are_refused(params: dict[str, object], bad: str) -> None:
    with pytest.raises(ConfigError) as err:
        create("prune-unstructured", **params)
    assert bad in err.value.message
    assert "prune-unstructured" in err.value.message


# --- sparsity.py ------------------------------------------------------------------------------


def test_zstd_size_of_zeros_is_tiny_and_of_noise_is_not() -> None:
    zeros = bytes(100_000)
    noise = np.random.default_rng(0).bytes(100_000)
    assert zstd_size(zeros) < 100
    assert zstd_size(noise) > 99_000


def test_zstd_level_out_of_range_is_refused() -> None:
    with pytest.raises(ConfigError, match="zstd level 23"):
        zstd_size(b"abc", level=23)


def test_onnx_sparsity_counts_weights_only(tmp_path: Path) -> None:
    path = make_linear_onnx(tmp_path / "m.onnx", features=4, classes=3)
    count = onnx_weight_sparsity(path)
    assert count == SparsityCount(0, 12)  # the 4x3 weight; the bias (rank 1) is left out


def test_missing_and_foreign_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="nope.onnx"):
        compressed_size(tmp_path / "nope.onnx")
    with pytest.raises(NotFoundError, match="nope.onnx"):
        onnx_weight_sparsity(tmp_path / "nope.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\xff\x00 not a model")
    with pytest.raises(UntrustedArtifactError, match="junk.onnx"):
        onnx_weight_sparsity(junk)


def test_counts_and_sizes_validate_themselves() -> None:
    with pytest.raises(ConfigError, match="5/3"):
        SparsityCount(5, 3)
    with pytest.raises(ConfigError, match="zstd=0"):
        CompressedSize(10, 0, 19)
    assert SparsityCount(1, 4) + SparsityCount(3, 4) == SparsityCount(4, 8)
    assert CompressedSize(100, 25, 19).ratio == 4.0
