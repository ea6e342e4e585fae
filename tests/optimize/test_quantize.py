"""Post-training quantization: what the quantized graphs hold, how close they stay, bad input.

Two tiny real models trained for a few epochs on a digits subset (torch, exported with
edgeloop's exporter): a conv net (static INT8's case) and a MatMul-heavy MLP (dynamic INT8's).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeloop.core.errors import ConfigError, ConversionError, DataError, NotFoundError
from edgeloop.data import load_bundled, stratified_split
from edgeloop.data.dataset import Dataset, Splits
from edgeloop.formats.onnx_info import inspect_onnx
from edgeloop.formats.parity import onnx_predictor
from edgeloop.optimize import ModelSource, Variant, create, known_methods
from edgeloop.optimize.calibration import DatasetCalibrationReader, calibration_samples
from edgeloop.optimize.graph import census

pytest.importorskip("torch")
pytest.importorskip("sklearn")

OURS = ("static-int8", "dynamic-int8", "fp16", "graph-opt")


@pytest.fixture(scope="module")
def splits() -> Splits:
    ds = load_bundled("digits")
    return stratified_split(ds.subset(np.arange(600)), val=0.15, test=0.15, seed=0)


def _train_export(arch_name: str, width: int, splits: Splits, out: Path) -> ModelSource:
    from edgeloop.formats.onnx_export import export_onnx
    from edgeloop.training import ArchConfig, FitConfig, deployable, fit

    shape = splits.train.sample_shape
    arch = ArchConfig(arch_name, shape, splits.train.num_classes, width=width)
    result = fit(arch, splits, FitConfig(epochs=4, seed=0), progress=False)
    export_onnx(deployable(result.module, arch), splits.test.x, out)
    return ModelSource(out, None, arch_name)


@pytest.fixture(scope="module")
def conv(splits: Splits, tmp_path_factory: pytest.TempPathFactory) -> ModelSource:
    """Conv net (3 conv layers + a linear head), the static-INT8 case."""
    return _train_export("cnn", 16, splits, tmp_path_factory.mktemp("conv") / "conv.onnx")


@pytest.fixture(scope="module")
def mlp(splits: Splits, tmp_path_factory: pytest.TempPathFactory) -> ModelSource:
    """MLP 64-128-128-10: all its compute is MatMul (Gemm), the dynamic-INT8 case."""
    return _train_export("mlp", 32, splits, tmp_path_factory.mktemp("mlp") / "mlp.onnx")


def _conv_count(model: Path) -> int:
    return census(model).count("Conv")


# --- static INT8 -------------------------------------------------------------------------------


def test_static_qdq_quantizes_every_conv(conv: ModelSource, splits: Splits, tmp_path: Path) -> None:
    variant = create("static-int8").fit(splits).apply(conv, tmp_path / "qdq.onnx")
    got = census(variant.path)
    assert got.count("QuantizeLinear") > 0 and got.count("DequantizeLinear") > 0
    assert got.float_compute == 0, got.float_compute_nodes
    # every Conv and the head Gemm run on integers
    assert got.int_compute == _conv_count(conv.onnx) + 1
    assert variant.extra["size_ratio"] > 1.5
    assert variant.parity.top1_agreement is not None and variant.parity.top1_agreement >= 0.9
    assert variant.parity.max_abs_diff < 0.2
    assert variant.settings["calibration_data"]["split"] == "digits train"


def test_static_qoperator_writes_qlinearconv(
    conv: ModelSource, splits: Splits, tmp_path: Path
) -> None:
    variant = create("static-int8", format="qoperator").fit(splits).apply(conv, tmp_path / "q.onnx")
    got = census(variant.path)
    assert got.count("QLinearConv") == _conv_count(conv.onnx)
    assert got.count("Conv") == 0 and got.float_compute == 0
    assert variant.parity.top1_agreement is not None and variant.parity.top1_agreement >= 0.9


def test_static_per_channel_stores_one_scale_per_output_channel(
    conv: ModelSource, splits: Splits, tmp_path: Path
) -> None:
    def scales(path: Path) -> int:
        model = onnx.load(str(path))
        inits = {t.name: t for t in model.graph.initializer}
        weight_dq = [
            n
            for n in model.graph.node
            if n.op_type == "DequantizeLinear"
            and inits.get(n.input[0]) is not None
            and inits[n.input[0]].data_type == TensorProto.INT8
        ]
        return sum(int(np.prod(inits[n.input[1]].dims)) for n in weight_dq)

    opt = create("static-int8", per_channel=True).fit(splits)
    per_channel = scales(opt.apply(conv, tmp_path / "pc.onnx").path)
    per_tensor = scales(
        create("static-int8", per_channel=False).fit(splits).apply(conv, tmp_path / "pt.onnx").path
    )
    assert per_tensor == _conv_count(conv.onnx) + 1  # one scale per weight tensor
    assert per_channel > per_tensor


def test_static_float_ops_keeps_the_head_in_float(
    conv: ModelSource, splits: Splits, tmp_path: Path
) -> None:
    opt = create("static-int8", float_ops=("Gemm",)).fit(splits)
    variant = opt.apply(conv, tmp_path / "head.onnx")
    got = census(variant.path)
    assert got.int_compute == _conv_count(conv.onnx)
    assert got.float_compute == 1 and got.count("Gemm") == 1
    assert any("1 compute nodes stayed in float" in note for note in variant.notes)


def test_quantized_files_carry_no_exporter_stack_traces(
    conv: ModelSource, splits: Splits, tmp_path: Path
) -> None:
    parent = onnx.load(str(conv.onnx))
    assert any(n.metadata_props for n in parent.graph.node)  # torch's exporter writes them
    variant = create("static-int8").fit(splits).apply(conv, tmp_path / "q.onnx")
    assert not any(n.metadata_props for n in onnx.load(str(variant.path)).graph.node)


# --- calibration -------------------------------------------------------------------------------


def test_calibration_takes_train_samples_only(splits: Splits) -> None:
    opt = create("static-int8", samples=50).fit(splits)
    x = opt.calibration_x_  # type: ignore[attr-defined]
    assert x.shape == (50, *splits.train.sample_shape)
    train_rows = {row.tobytes() for row in splits.train.x}
    assert all(row.tobytes() in train_rows for row in x)


def test_calibration_samples_spread_evenly_and_cap(splits: Splits) -> None:
    x = calibration_samples(splits.train, 3)
    n = len(splits.train)
    np.testing.assert_array_equal(x, splits.train.x[[0, round((n - 1) / 2), n - 1]])
    assert len(calibration_samples(splits.train, 10 * n)) == n
    with pytest.raises(ConfigError, match="0"):
        calibration_samples(splits.train, 0)


def test_reader_yields_batches_of_the_right_shape_then_none() -> None:
    x = np.arange(40 * 64, dtype=np.float32).reshape(40, 1, 8, 8)
    reader = DatasetCalibrationReader(x, "input", batch_size=16)
    got = []
    while (feed := reader.get_next()) is not None:
        got.append(feed["input"])
    assert [b.shape for b in got] == [(16, 1, 8, 8), (16, 1, 8, 8), (8, 1, 8, 8)]
    assert len(reader) == 3
    np.testing.assert_array_equal(np.concatenate(got), x)
    reader.rewind()
    first = reader.get_next()
    assert first is not None and np.array_equal(first["input"], x[:16])


def test_wrong_calibration_shape_names_both_shapes(
    conv: ModelSource, splits: Splits, tmp_path: Path
) -> None:
    def reshaped(ds: Dataset) -> Dataset:
        return ds.with_arrays(ds.x.reshape(len(ds), 1, 4, 16), ds.y)

    bad = Splits(reshaped(splits.train), reshaped(splits.val), splits.test, splits.seed)
    opt = create("static-int8").fit(bad)
    with pytest.raises(DataError) as info:
        opt.apply(conv, tmp_path / "bad.onnx")
    assert "1x4x16" in info.value.message and "?x1x8x8" in info.value.message
    assert not (tmp_path / "bad.onnx").exists()


# --- dynamic INT8 and FP16 ---------------------------------------------------------------------


def test_dynamic_quantizes_every_linear_layer_of_the_mlp(
    mlp: ModelSource, splits: Splits, tmp_path: Path
) -> None:
    parent = census(mlp.onnx)
    variant = create("dynamic-int8").fit(splits).apply(mlp, tmp_path / "dyn.onnx")
    got = census(variant.path)
    assert got.count("MatMulInteger") == parent.count("Gemm", "MatMul") == 3
    assert got.count("Gemm") == 0 and got.float_compute == 0
    assert variant.extra["size_ratio"] > 3.0
    assert variant.parity.top1_agreement is not None and variant.parity.top1_agreement >= 0.95
    assert any("Gemm nodes rewritten" in note for note in variant.notes)


def test_dynamic_leaves_conv_in_float_and_says_so(
    conv: ModelSource, splits: Splits, tmp_path: Path
) -> None:
    variant = create("dynamic-int8").fit(splits).apply(conv, tmp_path / "dyn.onnx")
    got = census(variant.path)
    assert got.count("ConvInteger") == 0 and got.count("Conv") == _conv_count(conv.onnx)
    assert got.float_compute == _conv_count(conv.onnx)
    assert any("stayed in float" in note for note in variant.notes)


def test_dynamic_refuses_a_model_without_matmul(splits: Splits, tmp_path: Path) -> None:
    w = np.ones((4, 1, 3, 3), np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "W"], ["output"], pads=[1, 1, 1, 1])],
        "convonly",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 1, 8, 8])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["n", 4, 8, 8])],
        initializer=[numpy_helper.from_array(w, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "convonly.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ConversionError) as info:
        create("dynamic-int8").fit(splits).apply(ModelSource(path), tmp_path / "d.onnx")
    assert "convonly.onnx" in info.value.message and "Conv" in info.value.message
    assert info.value.hint is not None and "static-int8" in info.value.hint


def test_fp16_halves_the_initializer_bytes(
    conv: ModelSource, splits: Splits, tmp_path: Path
) -> None:
    variant = create("fp16").fit(splits).apply(conv, tmp_path / "half.onnx")
    before = census(conv.onnx).initializer_bytes
    after = census(variant.path).initializer_bytes
    assert after.get("float16", 0) * 2 == before["float32"]
    assert after.get("float32", 0) == 0
    assert variant.parity.max_abs_diff < 1e-2
    assert any("no CPU speed-up" in note for note in variant.notes)


def test_fp16_runs_on_openvino_under_the_files_tensor_names(
    conv: ModelSource, splits: Splits, tmp_path: Path
) -> None:
    """FP16 keeps float32 inputs behind a Cast that OpenVINO folds into its input port, which
    then also answers to ``graph_input_cast_0``; clients still send and get the file's names."""
    from edgeloop.runtime import SessionConfig, get_engine, load_model

    ok, reason = get_engine("openvino").available()
    if not ok:
        pytest.skip(reason)
    half = create("fp16").fit(splits).apply(conv, tmp_path / "half.onnx").path
    config = SessionConfig(intra_op_threads=1)
    reference, model = load_model(half, config, "onnxruntime"), load_model(half, config, "openvino")
    assert [s.name for s in model.inputs] == [s.name for s in reference.inputs]
    assert [s.name for s in model.outputs] == [s.name for s in reference.outputs]
    feeds = {reference.inputs[0].name: splits.test.x[:8]}
    got, want = model.run(feeds), reference.run(feeds)
    assert list(got) == list(want)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], atol=1e-3)


# --- bad input ---------------------------------------------------------------------------------


def test_unknown_method_lists_the_known_ones() -> None:
    with pytest.raises(NotFoundError) as info:
        create("int3-magic")
    assert "int3-magic" in info.value.message
    for method in ("static-int8", "dynamic-int8", "fp16", "graph-opt"):
        assert method in info.value.message


@pytest.mark.parametrize(
    ("method", "params", "named"),
    [
        ("static-int8", {"format": "qdqx"}, ["qdqx", "qoperator"]),
        ("static-int8", {"calibration": "mse"}, ["mse", "entropy", "percentile"]),
        ("static-int8", {"activations": "int4"}, ["int4", "uint8"]),
        ("static-int8", {"samples": 0}, ["0"]),
        ("static-int8", {"per_channel": "yes"}, ["yes"]),
        ("dynamic-int8", {"op_types": ("MatMul", "Softmax")}, ["Softmax", "MatMul"]),
        ("dynamic-int8", {"weights": "int16"}, ["int16", "int8"]),
        ("fp16", {"keep_io_types": 1}, ["1"]),
        ("graph-opt", {"level": "all"}, ["all", "basic", "extended"]),
        ("graph-opt", {"tool": "tvm"}, ["tvm", "onnxslim"]),
        ("static-int8", {"bits": 4}, ["bits"]),
        ("static-int8", {"float_ops": ("Gemm", "not an op")}, ["not an op"]),
    ],
)
def test_bad_params_name_the_value_and_the_allowed(
    method: str, params: dict[str, object], named: list[str]
) -> None:
    with pytest.raises(ConfigError) as info:
        create(method, **params)
    for text in named:
        assert text in str(info.value)


# --- conformance: every optimizer of this module -----------------------------------------------


def _ours() -> list[str]:
    known = known_methods()
    return [m for m in OURS if m in known]


class TestConformance:
    """The verb set each of our optimizers must keep (scikit-learn's check_estimator idea)."""

    @pytest.fixture(params=_ours())
    def method(self, request: pytest.FixtureRequest) -> str:
        return str(request.param)

    def test_params_round_trip(self, method: str) -> None:
        opt = create(method)
        assert create(method, **opt.get_params()).get_params() == opt.get_params()

    def test_fit_returns_self(self, method: str, splits: Splits) -> None:
        opt = create(method)
        assert opt.fit(splits) is opt

    def test_apply_before_fit_is_refused(
        self, method: str, conv: ModelSource, tmp_path: Path
    ) -> None:
        with pytest.raises(ConfigError, match="fit"):
            create(method).apply(conv, tmp_path / "v.onnx")
        assert not (tmp_path / "v.onnx").exists()

    def test_variant_is_complete_and_loads(
        self, method: str, conv: ModelSource, splits: Splits, tmp_path: Path
    ) -> None:
        variant = create(method).fit(splits).apply(conv, tmp_path / f"{method}.onnx")
        assert isinstance(variant, Variant)
        assert variant.method == method and variant.parent == conv.onnx
        assert variant.settings and variant.tools
        assert variant.parity.samples == len(splits.test)
        assert variant.parity.split == "digits test"
        assert variant.to_dict()["output"] == str(tmp_path / f"{method}.onnx")
        inspect_onnx(variant.path)  # passes the ONNX checker, not only ORT
        out = onnx_predictor(variant.path)(splits.test.x[:4])
        assert out.shape == (4, splits.test.num_classes)
