"""One conformance class over the weight-changing optimizers: qat, prune-*, distill.

Each must keep its parameters, return self from fit, refuse apply before fit and without a
checkpoint, keep the test split out of training, and yield a complete Variant whose file runs
in ONNX Runtime with its parent's signature and whose checkpoint reloads.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.optimize.torch_parents import digits_splits, one_torch_thread, trained_parent

from edgeloop.core.errors import ConfigError
from edgeloop.data.dataset import Splits
from edgeloop.formats.onnx_info import inspect_onnx
from edgeloop.formats.parity import onnx_predictor
from edgeloop.optimize import ModelSource, Variant, create, known_methods

torch = pytest.importorskip("torch")
pytest.importorskip("torch_pruning")
pytest.importorskip("zstandard")

# Each method with its quickest settings: these tests check the contract, not the quality.
FAST: dict[str, dict[str, Any]] = {
    "qat": {"epochs": 1},
    "prune-unstructured": {"epochs": 0, "steps": 1},
    "prune-structured": {"epochs": 0},
    "distill": {"epochs": 1},
}
METHODS = sorted(FAST)


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    yield from one_torch_thread()


@pytest.fixture(scope="module")
def splits() -> Splits:
    return digits_splits()


@pytest.fixture(scope="module")
def parent(tmp_path_factory: pytest.TempPathFactory, splits: Splits) -> ModelSource:
    return trained_parent(tmp_path_factory.mktemp("parent"), splits, width=8, epochs=3)


@pytest.fixture(scope="module")
def poisoned(splits: Splits) -> Splits:
    """The splits with every test input NaN.

    Training refuses NaN inputs in any split it is given, and the test split may only be read
    for parity; so with these splits every method must still work, and its parity alone must
    show the NaNs.
    """
    nan = np.full_like(splits.test.x, np.nan)
    test = splits.test.with_arrays(nan, splits.test.y, name=splits.test.name)
    return Splits(splits.train, splits.val, test, seed=splits.seed)


@pytest.fixture(scope="module")
def variants(
    tmp_path_factory: pytest.TempPathFactory, parent: ModelSource, poisoned: Splits
) -> dict[str, Variant]:
    root = tmp_path_factory.mktemp("variants")
    return {
        m: create(m, **FAST[m]).fit(poisoned).apply(parent, root / f"{m}.onnx") for m in METHODS
    }


class TestWeightChangingOptimizers:
    def test_all_are_registered_and_need_data_and_a_checkpoint(self) -> None:
        assert set(METHODS) <= set(known_methods())
        for method in METHODS:
            opt = create(method)
            assert opt.needs_data and opt.needs_checkpoint and opt.name == method

    @pytest.mark.parametrize("method", METHODS)
    def test_params_round_trip(self, method: str) -> None:
        opt = create(method, **FAST[method])
        params = opt.get_params()
        assert params.items() >= FAST[method].items()
        assert create(method, **params).get_params() == params

    @pytest.mark.parametrize("method", METHODS)
    def test_fit_returns_self(self, method: str, splits: Splits) -> None:
        opt = create(method)
        assert opt.fit(splits) is opt

    @pytest.mark.parametrize("method", METHODS)
    def test_apply_before_fit_is_refused(
        self, method: str, parent: ModelSource, tmp_path: Path
    ) -> None:
        with pytest.raises(ConfigError, match="fit") as err:
            create(method).apply(parent, tmp_path / "v.onnx")
        assert method in err.value.message
        assert not list(tmp_path.iterdir())

    @pytest.mark.parametrize("method", METHODS)
    def test_missing_checkpoint_is_refused(
        self, method: str, parent: ModelSource, splits: Splits, tmp_path: Path
    ) -> None:
        with pytest.raises(ConfigError, match="needs the torch checkpoint"):
            create(method).fit(splits).apply(ModelSource(parent.onnx), tmp_path / "v.onnx")
        assert not list(tmp_path.iterdir())

    @pytest.mark.parametrize("method", METHODS)
    def test_variant_fields_are_filled(
        self, method: str, variants: dict[str, Variant], parent: ModelSource, splits: Splits
    ) -> None:
        v = variants[method]
        assert v.method == method and v.path.is_file() and v.parent == parent.onnx
        assert v.settings.items() >= create(method, **FAST[method]).get_params().items()
        assert {"torch", "onnx", "onnxruntime"} <= set(v.tools)
        assert v.parity.samples == len(splits.test) and v.parity.split == "digits test"
        assert v.notes and v.extra
        body = v.to_dict()
        assert body["output"] == str(v.path) and body["checkpoint"] == str(v.checkpoint)

    @pytest.mark.parametrize("method", METHODS)
    def test_output_runs_in_onnx_runtime_with_the_parent_signature(
        self, method: str, variants: dict[str, Variant], parent: ModelSource, splits: Splits
    ) -> None:
        v = variants[method]
        a, b = inspect_onnx(parent.onnx), inspect_onnx(v.path)
        assert [t.name for t in a.inputs] == [t.name for t in b.inputs]
        x = splits.test.x[:7]
        assert onnx_predictor(v.path)(x).shape == onnx_predictor(parent.onnx)(x).shape

    @pytest.mark.parametrize("method", METHODS)
    def test_checkpoint_reloads(
        self, method: str, variants: dict[str, Variant], splits: Splits
    ) -> None:
        from edgeloop.optimize.pruned_checkpoint import load_module
        from edgeloop.training import deployable

        v = variants[method]
        assert v.checkpoint is not None
        module, arch = load_module(v.checkpoint)
        with torch.no_grad():
            out = deployable(module, arch)(torch.from_numpy(splits.test.x)).numpy()
        exported = onnx_predictor(v.path)(splits.test.x)
        if method == "qat":  # float weights vs their INT8 rounding: same classes, mostly
            assert float((out.argmax(1) == exported.argmax(1)).mean()) >= 0.85
        else:
            assert np.max(np.abs(out - exported)) < 1e-4

    @pytest.mark.parametrize("method", METHODS)
    def test_the_test_split_never_reaches_training(
        self, method: str, variants: dict[str, Variant]
    ) -> None:
        # Built from `poisoned` splits: training would have refused the NaN test inputs.
        assert np.isnan(variants[method].parity.max_abs_diff)
