"""qat: fake quantization in torch, a QDQ ONNX file that ONNX Runtime runs in INT8."""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto
from tests.optimize.torch_parents import digits_splits, one_torch_thread, trained_parent

from edgeloop.core.errors import ConfigError
from edgeloop.data.dataset import Splits
from edgeloop.formats.parity import onnx_predictor
from edgeloop.optimize import ModelSource, Variant, create

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    yield from one_torch_thread()


@pytest.fixture(scope="module")
def splits() -> Splits:
    return digits_splits()


@pytest.fixture(scope="module")
def parent(tmp_path_factory: pytest.TempPathFactory, splits: Splits) -> ModelSource:
    return trained_parent(tmp_path_factory.mktemp("parent"), splits, width=8, epochs=8)


@pytest.fixture(scope="module")
def qat(tmp_path_factory: pytest.TempPathFactory, parent: ModelSource, splits: Splits) -> Variant:
    out = tmp_path_factory.mktemp("qat") / "qat.onnx"
    return create("qat", epochs=2).fit(splits).apply(parent, out)


def ops(path: Path) -> Counter[str]:
    return Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def test_exports_qdq_nodes_with_int8_weights(qat: Variant) -> None:
    model = onnx.load(str(qat.path))
    found = ops(qat.path)
    assert found["QuantizeLinear"] >= 4 and found["DequantizeLinear"] >= 8
    assert qat.extra["qdq_nodes"] == {
        "QuantizeLinear": found["QuantizeLinear"],
        "DequantizeLinear": found["DequantizeLinear"],
    }
    int8 = [i for i in model.graph.initializer if i.data_type == TensorProto.INT8]
    # The 3 convolutions' and the dense layer's weights are stored as int8.
    assert len([i for i in int8 if len(i.dims) >= 2]) == 4
    assert not [
        i for i in model.graph.initializer if i.data_type == TensorProto.FLOAT and len(i.dims) >= 2
    ]


def test_onnx_runtime_runs_it_as_int8(qat: Variant, splits: Splits, tmp_path: Path) -> None:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "as-run.onnx")
    options.log_severity_level = 3
    session = ort.InferenceSession(str(qat.path), options, providers=["CPUExecutionProvider"])
    out = session.run(None, {"input": splits.test.x})[0]
    assert out.shape == (len(splits.test), 10)
    assert np.allclose(out.sum(axis=1), 1.0, atol=1e-4)
    assert ops(tmp_path / "as-run.onnx")["QLinearConv"] == 3  # every conv runs in INT8


def test_int8_file_is_smaller_and_stays_close_to_its_parent(
    qat: Variant, parent: ModelSource
) -> None:
    assert qat.path.stat().st_size < 0.6 * parent.onnx.stat().st_size
    assert qat.parity.top1_agreement is not None and qat.parity.top1_agreement >= 0.9
    assert qat.extra["val_accuracy"] is not None


def test_checkpoint_holds_the_float_weights_of_the_export(qat: Variant, splits: Splits) -> None:
    from edgeloop.optimize.pruned_checkpoint import load_module
    from edgeloop.training import deployable

    assert qat.checkpoint is not None
    module, arch = load_module(qat.checkpoint)
    with torch.no_grad():
        float_out = deployable(module, arch)(torch.from_numpy(splits.test.x)).numpy()
    int8_out = onnx_predictor(qat.path)(splits.test.x)
    # Same weights, minus the rounding: they agree on nearly every class.
    assert float((float_out.argmax(1) == int8_out.argmax(1)).mean()) >= 0.9


def test_per_tensor_weights_have_one_scale(
    parent: ModelSource, splits: Splits, tmp_path: Path
) -> None:
    from onnx import numpy_helper

    variant = (
        create("qat", epochs=1, per_channel=False).fit(splits).apply(parent, tmp_path / "t.onnx")
    )
    model = onnx.load(str(variant.path))
    inits = {i.name: i for i in model.graph.initializer}
    weight_dq = [
        n
        for n in model.graph.node
        if n.op_type == "DequantizeLinear"
        and n.input[0] in inits
        and inits[n.input[0]].data_type == TensorProto.INT8
        and len(inits[n.input[0]].dims) >= 2
    ]
    assert len(weight_dq) == 4
    assert all(numpy_helper.to_array(inits[n.input[1]]).size == 1 for n in weight_dq)


def test_qat_starts_from_a_pruned_checkpoint(
    parent: ModelSource, splits: Splits, tmp_path: Path
) -> None:
    pytest.importorskip("torch_pruning")
    pruned = create("prune-structured", epochs=0).fit(splits).apply(parent, tmp_path / "p.onnx")
    source = ModelSource(pruned.path, pruned.checkpoint)
    variant = create("qat", epochs=1).fit(splits).apply(source, tmp_path / "pq.onnx")
    assert ops(tmp_path / "pq.onnx")["DequantizeLinear"] > 0
    assert variant.checkpoint is not None
    from edgeloop.optimize.pruned_checkpoint import load_module

    module, _ = load_module(variant.checkpoint)
    assert module[0].out_channels == 4  # type: ignore[index]  # still pruned


# --- fake_quant.py: the maths, without export -------------------------------------------------


def test_folding_back_to_the_arch_layout_keeps_the_function() -> None:
    from edgeloop.optimize.fake_quant import QuantLayer, float_weights, quantize_module
    from edgeloop.training import ArchConfig, build

    torch.manual_seed(0)
    arch = ArchConfig("cnn", (1, 8, 8), 10, width=4)
    original = build(arch).eval()
    with torch.no_grad():  # a BatchNorm with real statistics, not the identity
        for m in original.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 2)
    quantized = quantize_module(original, per_channel=True, arch_name="cnn")
    assert sum(isinstance(m, QuantLayer) for m in quantized) == 4
    x = torch.rand(16, 1, 8, 8)
    with torch.no_grad():
        fused = torch.nn.Sequential(
            *[
                m.layer if isinstance(m, QuantLayer) else m
                for m in quantized
                if type(m).__name__ != "ActQuant"
            ]
        )(x)
        restored = float_weights(quantized, copy.deepcopy(original))(x)
    assert torch.allclose(fused, restored, atol=1e-5)
    with torch.no_grad():
        assert torch.allclose(original(x), restored, atol=1e-4)


def test_activation_range_always_holds_zero() -> None:
    from edgeloop.optimize.fake_quant import ActQuant

    q = ActQuant().train()
    q(torch.full((4, 3), 5.0))  # all positive: the range still starts at 0
    scale, zero = q.qparams()
    assert zero == 0 and scale == pytest.approx(5.0 / 255)


def test_unobserved_quantizer_is_refused() -> None:
    from edgeloop.optimize.fake_quant import ActQuant

    with pytest.raises(ConfigError, match="no range yet"):
        ActQuant().eval()(torch.zeros(2, 2))


def test_an_arch_qat_cannot_handle_is_named(
    splits: Splits, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from edgeloop.training import ArchConfig, build, save_checkpoint

    arch = ArchConfig("autoencoder", (1, 8, 8), 1, width=4)
    ckpt = save_checkpoint(tmp_path / "ae", build(arch), arch, None, None)
    source = ModelSource(tmp_path / "unused.onnx", ckpt)
    with pytest.raises(ConfigError, match="'autoencoder'") as err:
        create("qat").fit(splits).apply(source, tmp_path / "v.onnx")
    assert err.value.hint is not None and "static-int8" in err.value.hint


@pytest.mark.parametrize(
    ("params", "bad"),
    [
        ({"per_channel": "yes"}, "per_channel 'yes'"),
        ({"epochs": 0}, "epochs 0"),
        ({"calibration_samples": 0}, "calibration_samples 0"),
        ({"lr": -1.0}, "learning rate -1.0"),
    ],
)
def test_bad_params_are_refused(params: dict[str, object], bad: str) -> None:
    with pytest.raises(ConfigError) as err:
        create("qat", **params)
    assert bad in err.value.message


def test_missing_checkpoint_is_refused(parent: ModelSource, splits: Splits, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'qat' changes weights"):
        create("qat").fit(splits).apply(ModelSource(parent.onnx), tmp_path / "v.onnx")
