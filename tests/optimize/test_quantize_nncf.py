"""NNCF post-training quantization (the side-by-side method), when nncf is installed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeloop.core.errors import ConfigError
from edgeloop.data import load_bundled, stratified_split
from edgeloop.data.dataset import Splits
from edgeloop.optimize import ModelSource, create
from edgeloop.optimize.graph import census

pytest.importorskip("nncf")
torch = pytest.importorskip("torch")

import edgeloop.optimize.openvino_quant as openvino_quant  # noqa: E402  registers nncf-int8


@pytest.fixture(scope="module")
def splits() -> Splits:
    ds = load_bundled("digits")
    return stratified_split(ds.subset(np.arange(300)), val=0.15, test=0.15, seed=0)


@pytest.fixture(scope="module")
def conv(tmp_path_factory: pytest.TempPathFactory) -> ModelSource:
    from edgeloop.formats.onnx_export import export_onnx

    torch.manual_seed(0)
    module = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 10),
    ).eval()
    path = tmp_path_factory.mktemp("nncf") / "conv.onnx"
    export_onnx(module, np.zeros((2, 1, 8, 8), np.float32), path)
    return ModelSource(path)


def test_nncf_writes_a_qdq_model_close_to_its_parent(
    conv: ModelSource, splits: Splits, tmp_path: Path
) -> None:
    opt = create("nncf-int8", samples=64)
    assert opt.fit(splits) is opt
    variant = opt.apply(conv, tmp_path / "nncf.onnx")
    got = census(variant.path)
    assert got.count("QuantizeLinear") > 0 and got.count("DequantizeLinear") > 0
    assert got.int_compute >= 2  # both convolutions run on integers
    assert variant.tools["nncf"] and variant.parity.max_abs_diff < 0.5
    assert create("nncf-int8", **opt.get_params()).get_params() == opt.get_params()


def test_nncf_refuses_apply_before_fit_and_bad_presets(conv: ModelSource, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="fit"):
        create("nncf-int8").apply(conv, tmp_path / "v.onnx")
    with pytest.raises(ConfigError) as info:
        create("nncf-int8", preset="fastest")
    assert "fastest" in info.value.message and "mixed" in info.value.message


def test_nncf_openvino_ir_is_written(conv: ModelSource, splits: Splits, tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    tools = openvino_quant.quantize_openvino_ir(conv.onnx, splits.train.x[:32], tmp_path / "q.xml")
    assert (tmp_path / "q.xml").is_file() and (tmp_path / "q.bin").is_file()
    assert set(tools) == {"nncf", "openvino"}


def test_nncf_transformer_model_type_runs_on_a_conv_net(
    conv: ModelSource, splits: Splits, tmp_path: Path
) -> None:
    variant = create("nncf-int8", samples=32, model_type="transformer").fit(splits)
    got = census(variant.apply(conv, tmp_path / "t.onnx").path)
    assert got.int_compute >= 2 and variant.get_params()["model_type"] == "transformer"
    with pytest.raises(ConfigError) as info:
        create("nncf-int8", model_type="bert")
    assert "bert" in info.value.message and "transformer" in info.value.message
