"""benchmark() on tiny real ONNX models: facts about the figures, exact accuracy, bad inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from sklearn.metrics import roc_auc_score
from tests.tiny_models import make_linear_onnx

from edgeloop.bench import RssScope, benchmark, detect_power_probe, run_benchmark
from edgeloop.bench.machine import describe_machine, usable_cpus
from edgeloop.bench.measure import measure, peak_rss_mb
from edgeloop.bench.power import NullProbe, RaplProbe, RaplZone
from edgeloop.bench.report import BenchConfig, BenchReport
from edgeloop.core.errors import (
    ConfigError,
    ConversionError,
    NotFoundError,
    UntrustedArtifactError,
)
from edgeloop.data.dataset import Dataset, Modality, Task

FAST = {"runs": 30, "warmup": 3}


def save_model(
    path: Path,
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    initializers: list[onnx.TensorProto],
) -> Path:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def weights(path: Path) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """W and B of a make_linear_onnx model, read back from the file."""
    init = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
    return init["W"].astype(np.float64), init["B"].astype(np.float64)


def labelled(path: Path, n: int, seed: int = 1) -> Dataset:
    """Samples with known true classes under the model; every third label is made wrong."""
    w, b = weights(path)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((4 * n, w.shape[0])).astype(np.float32)
    logits = x.astype(np.float64) @ w + b
    top2 = np.sort(logits, axis=1)[:, -2:]
    x = x[top2[:, 1] - top2[:, 0] > 1e-3][:n]  # no near-ties float rounding could flip
    y = np.argmax(x.astype(np.float64) @ w + b, axis=1)
    y[::3] = (y[::3] + 1) % w.shape[1]
    classes = tuple(f"c{i}" for i in range(w.shape[1]))
    return Dataset("toy", x, y.astype(np.int64), classes, Modality.TABULAR, source="test")


def expected_accuracy(path: Path, data: Dataset) -> float:
    w, b = weights(path)
    return float(np.mean(np.argmax(data.x.astype(np.float64) @ w + b, axis=1) == data.y))


def test_latency_figures_are_positive_and_ordered(linear_onnx: Path) -> None:
    m = benchmark(linear_onnx, **FAST)
    assert 0 < m.latency_ms.p50 <= m.latency_ms.p90 <= m.latency_ms.p99
    assert m.engine == "onnxruntime"
    assert m.provider == "CPUExecutionProvider"


def test_runs_batch_and_threads_are_honoured(linear_onnx: Path) -> None:
    report = run_benchmark(linear_onnx, batch_size=5, runs=17, warmup=2, threads=1)
    m = report.measurement
    assert (m.runs, m.batch_size, m.threads, report.warmup) == (17, 5, 1, 2)
    assert report.input_shapes == ("input: 5x4",)


def test_default_threads_are_the_usable_physical_cores(linear_onnx: Path) -> None:
    m = benchmark(linear_onnx, **FAST)
    assert m.threads == min(describe_machine().physical_cores, usable_cpus())


def test_throughput_is_consistent_with_the_latencies(linear_onnx: Path) -> None:
    report = run_benchmark(linear_onnx, batch_size=4, runs=40, warmup=2)
    m = report.measurement
    assert m.throughput_per_s == pytest.approx(4 * 40 / report.timed_s)
    total_ms = report.timed_s * 1000
    # At least half the runs took >= p50, and the slowest took >= p99.
    assert total_ms >= 20 * m.latency_ms.p50
    assert total_ms >= m.latency_ms.p99


def test_size_bytes_is_the_file_size(linear_onnx: Path) -> None:
    assert benchmark(linear_onnx, **FAST).size_bytes == linear_onnx.stat().st_size


def test_without_data_accuracy_is_none_with_reason(linear_onnx: Path) -> None:
    report = run_benchmark(linear_onnx, **FAST)
    assert report.measurement.accuracy is None
    assert report.measurement.accuracy_split is None
    assert report.accuracy_note is not None and "--data" in report.accuracy_note
    assert report.inputs.startswith("synthetic")


def test_accuracy_equals_the_numpy_figure(tmp_path: Path) -> None:
    model = make_linear_onnx(tmp_path / "m.onnx", features=6, classes=4, seed=3)
    data = labelled(model, 150)
    m = benchmark(model, batch_size=7, data=data, **FAST)
    want = expected_accuracy(model, data)
    assert 0.5 < want < 0.8  # the wrong labels make it a real test, not 0 or 1
    assert m.accuracy == want
    assert m.accuracy_split == "toy (all 150 samples)"


def test_accuracy_with_a_fixed_batch_axis_pads_the_last_batch(tmp_path: Path) -> None:
    source = make_linear_onnx(tmp_path / "free.onnx", features=4, classes=3)
    w, b = weights(source)
    model = save_model(
        tmp_path / "fixed.onnx",
        [
            helper.make_node("MatMul", ["input", "W"], ["mm"]),
            helper.make_node("Add", ["mm", "B"], ["out"]),
        ],
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [4, 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [4, 3])],
        [
            numpy_helper.from_array(w.astype(np.float32), "W"),
            numpy_helper.from_array(b.astype(np.float32), "B"),
        ],
    )
    data = labelled(source, 10)  # 10 samples = 4 + 4 + a padded 2
    m = benchmark(model, batch_size=4, data=data, split_name="toy test", **FAST)
    assert m.accuracy == expected_accuracy(source, data)
    assert m.accuracy_split == "toy test"


def anomaly_data(n: int = 60) -> Dataset:
    rng = np.random.default_rng(5)
    y = (rng.random(n) < 0.3).astype(np.int64)
    # Integers: the model's arithmetic on them is exact, so the ranking is known.
    x = rng.integers(-8, 8, size=(n, 3)).astype(np.float32)
    x[:, 0] += 6 * y  # anomalies score higher on the first feature, with overlap
    return Dataset("toy-anomaly", x, y, ("normal", "anomaly"), Modality.TABULAR, Task.ANOMALY)


def test_anomaly_data_reports_roc_auc_of_a_score_model(tmp_path: Path) -> None:
    pick = np.array([[1.0], [0.0], [0.0]], dtype=np.float32)  # score = first feature
    model = save_model(
        tmp_path / "score.onnx",
        [helper.make_node("MatMul", ["input", "W"], ["score"])],
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch", 1])],
        [numpy_helper.from_array(pick, "W")],
    )
    data = anomaly_data()
    report = run_benchmark(model, data=data, **FAST)
    assert report.measurement.accuracy is None
    assert report.roc_auc == pytest.approx(roc_auc_score(data.y, data.x[:, 0]), abs=1e-12)
    assert report.roc_auc_split == "toy-anomaly (all 60 samples)"
    assert report.accuracy_note is not None and "ROC-AUC" in report.accuracy_note


def test_anomaly_data_reports_roc_auc_of_an_autoencoder(tmp_path: Path) -> None:
    model = save_model(
        tmp_path / "ae.onnx",
        [helper.make_node("Mul", ["input", "half"], ["recon"])],
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("recon", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(np.array(0.5, dtype=np.float32), "half")],
    )
    data = anomaly_data()
    report = run_benchmark(model, data=data, **FAST)
    error = ((0.5 * data.x.astype(np.float64)) ** 2).mean(axis=1)
    assert report.roc_auc == pytest.approx(roc_auc_score(data.y, error), abs=1e-12)


def test_isolated_peak_rss_is_the_childs(linear_onnx: Path) -> None:
    ballast = np.ones(256 * 1024 * 1024 // 8)  # 256 MiB resident in this process only
    parent = peak_rss_mb()
    assert parent is not None and parent > 256
    report = run_benchmark(linear_onnx, isolate=True, **FAST)
    assert report.rss_scope is RssScope.SUBPROCESS
    child = report.measurement.peak_rss_mb
    assert child is not None and 0 < child < parent - 200  # not inherited from this process
    assert ballast[-1] == 1.0


def test_isolated_run_measures_the_same_accuracy(tmp_path: Path) -> None:
    model = make_linear_onnx(tmp_path / "m.onnx")
    data = labelled(model, 40)
    report = run_benchmark(model, data=data, isolate=True, **FAST)
    assert report.measurement.accuracy == expected_accuracy(model, data)


def test_in_process_rss_scope(linear_onnx: Path) -> None:
    report = run_benchmark(linear_onnx, **FAST)
    assert report.rss_scope is RssScope.PROCESS
    assert report.measurement.peak_rss_mb == pytest.approx(peak_rss_mb(), rel=0.2)


def test_isolated_errors_come_back_as_the_same_class(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x01this is not a model" * 10)
    with pytest.raises(UntrustedArtifactError, match="garbage.onnx"):
        run_benchmark(garbage, isolate=True, **FAST)


def test_power_on_this_machine_is_a_reading_or_none_with_the_reason(linear_onnx: Path) -> None:
    m = benchmark(linear_onnx, **FAST)
    probe = detect_power_probe()
    if isinstance(probe, NullProbe):  # this machine (no /sys/class/powercap): n/a and why
        assert m.power_w is None
        assert m.power_source == probe.reason
    elif m.power_w is not None:
        assert m.power_source.startswith(("rapl", "ina3221"))


def test_power_comes_from_the_probe_given(linear_onnx: Path, tmp_path: Path) -> None:
    counter = tmp_path / "energy_uj"
    counter.write_text("7\n")  # never advances during the runs
    probe = RaplProbe((RaplZone("package-0", counter, 1000),))
    report = measure(BenchConfig(linear_onnx, **FAST), None, RssScope.PROCESS, probe=probe)
    assert report.measurement.power_w is None
    assert report.measurement.power_source == "RAPL counters (package-0) did not advance"


def test_report_round_trips_through_json_dicts(linear_onnx: Path) -> None:
    report = run_benchmark(linear_onnx, **FAST)
    assert BenchReport.from_dict(report.to_dict()) == report


def test_missing_model(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="nope.onnx"):
        benchmark(tmp_path / "nope.onnx", **FAST)


def test_garbage_model(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x01this is not a model" * 10)
    with pytest.raises(UntrustedArtifactError, match="garbage.onnx"):
        benchmark(garbage, **FAST)


def test_model_onnxruntime_cannot_load(tmp_path: Path) -> None:
    model = tmp_path / "custom.onnx"
    graph = helper.make_graph(
        [helper.make_node("Frobnicate", ["input"], ["out"], domain="com.example")],
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 4])],
    )
    proto = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)]
    )
    proto.ir_version = 8
    onnx.save(proto, str(model))
    with pytest.raises(ConversionError, match="custom.onnx"):
        benchmark(model, **FAST)


def test_data_of_the_wrong_shape(linear_onnx: Path) -> None:
    x = np.zeros((10, 5), dtype=np.float32)
    data = Dataset("wide", x, np.zeros(10, np.int64), ("a", "b", "c"), Modality.TABULAR)
    with pytest.raises(ConfigError, match=r"shape 5, but .* expects \?x4") as info:
        benchmark(linear_onnx, data=data, **FAST)
    assert "'wide'" in str(info.value)


def test_free_non_batch_axis_without_data(tmp_path: Path) -> None:
    model = save_model(
        tmp_path / "seq.onnx",
        [helper.make_node("Relu", ["tokens"], ["out"])],
        [helper.make_tensor_value_info("tokens", TensorProto.FLOAT, ["batch", "time", 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", "time", 8])],
        [],
    )
    with pytest.raises(ConfigError, match=r"'tokens' has shape \?x\?x8; axes \[1\]") as info:
        benchmark(model, **FAST)
    assert info.value.hint is not None and "--data" in info.value.hint


def test_fixed_batch_axis_and_another_batch_size(tmp_path: Path) -> None:
    model = save_model(
        tmp_path / "one.onnx",
        [helper.make_node("Relu", ["input"], ["out"])],
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4])],
        [],
    )
    assert benchmark(model, **FAST).batch_size == 1
    with pytest.raises(ConfigError, match="fixed batch axis of 1; batch size 8"):
        benchmark(model, batch_size=8, **FAST)


def test_data_for_a_two_input_model(tmp_path: Path) -> None:
    model = save_model(
        tmp_path / "two.onnx",
        [helper.make_node("Add", ["a", "b"], ["out"])],
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, ["batch", 4]),
        ],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 4])],
        [],
    )
    assert benchmark(model, **FAST).runs == 30  # synthetic inputs feed both
    data = Dataset(
        "d", np.zeros((3, 4), np.float32), np.zeros(3, np.int64), ("a",), Modality.TABULAR
    )
    with pytest.raises(ConfigError, match="2 inputs"):
        benchmark(model, data=data, **FAST)


@pytest.mark.parametrize(
    ("field", "value"), [("runs", 0), ("batch_size", 0), ("warmup", -1), ("threads", 0)]
)
def test_bad_counts(linear_onnx: Path, field: str, value: int) -> None:
    args: dict[str, int] = {"runs": 5, "warmup": 1, field: value}
    with pytest.raises(ConfigError, match=f"{field}={value}"):
        benchmark(linear_onnx, **args)
