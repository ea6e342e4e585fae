"""One conformance test for every registered optimizer (scikit-learn's check_estimator idea).

Each method must: keep its constructor parameters (get_params round-trips through create),
return self from fit, refuse apply before fit, and yield a Variant whose file loads in ONNX
Runtime, keeps the parent's input/output signature and records settings, tools and parity.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from tests.optimize.torch_parents import one_torch_thread

from edgeloop.core.errors import ConfigError, MissingDependencyError
from edgeloop.data import load_bundled, stratified_split
from edgeloop.data.dataset import Splits
from edgeloop.formats.onnx_info import inspect_onnx
from edgeloop.formats.parity import onnx_predictor
from edgeloop.optimize import ModelSource, Variant, create, known_methods

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

METHODS = known_methods()


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    # distill trains two students for up to 30 epochs with its defaults: on a shared 2-core
    # machine a second torch thread only waits (see one_torch_thread).
    yield from one_torch_thread()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelSource, Splits]:
    """A small CNN on a digits subset, two epochs: enough to optimize, quick to make."""
    from edgeloop.formats.onnx_export import export_onnx
    from edgeloop.training import ArchConfig, FitConfig, deployable, fit, save_checkpoint

    ds = load_bundled("digits")
    keep = np.arange(len(ds))[:600]
    splits = stratified_split(ds.subset(keep), val=0.15, test=0.15, seed=0)
    arch = ArchConfig("cnn", ds.sample_shape, ds.num_classes, width=8)
    result = fit(arch, splits, FitConfig(epochs=2, seed=0), progress=False)
    root = tmp_path_factory.mktemp("conformance")
    ckpt = save_checkpoint(root / "ckpt", result.module, arch, None, None)
    onnx = root / "parent.onnx"
    export_onnx(deployable(result.module, arch), splits.test.x, onnx)
    return ModelSource(onnx, ckpt, "parent"), splits


def test_some_methods_are_registered() -> None:
    assert METHODS, "no optimizer registered"


@pytest.mark.parametrize("method", METHODS)
def test_params_round_trip(method: str) -> None:
    opt = create(method)
    again = create(method, **opt.get_params())
    assert again.get_params() == opt.get_params()
    assert opt.name == method


@pytest.mark.parametrize("method", METHODS)
def test_apply_before_fit_is_refused(
    method: str, trained: tuple[ModelSource, Splits], tmp_path: Path
) -> None:
    source, _ = trained
    with pytest.raises(ConfigError):
        create(method).apply(source, tmp_path / "v.onnx")
    assert not (tmp_path / "v.onnx").exists()


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_variant_is_complete_and_runs(
    method: str, trained: tuple[ModelSource, Splits], tmp_path: Path
) -> None:
    source, splits = trained
    opt = create(method)
    assert opt.fit(splits) is opt
    try:
        variant = opt.apply(source, tmp_path / f"{method}.onnx")
    except MissingDependencyError as exc:  # an optional extra (nncf) that is not installed
        pytest.skip(str(exc))
    assert isinstance(variant, Variant)
    assert variant.method == method and variant.path.is_file()
    assert variant.parent == source.onnx
    assert variant.tools and isinstance(dict(variant.settings), dict)
    assert variant.parity.samples == min(len(splits.test), 1024)
    parent, child = inspect_onnx(source.onnx), inspect_onnx(variant.path)
    assert [t.name for t in child.inputs] == [t.name for t in parent.inputs]
    x = splits.test.x[:5]
    assert onnx_predictor(variant.path)(x).shape == onnx_predictor(source.onnx)(x).shape
