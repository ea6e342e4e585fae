"""Where EfficientNet-Lite0's time goes, FP32 vs static INT8, per layer kind and engine.

    .venv/bin/python bench/optimize_int8_profile.py [--cpu 1] [--threads 1] [--runs 50]
        [--batch 1] [--openvino-only]

Companion of ``bench/optimize_int8.py`` (same model, photos and calibration): it explains the
speed-ups there. ONNX Runtime's own profiler (``enable_profiling``) and OpenVINO's performance
counters (``PERF_COUNT``) give each node's kernel time over ``--runs`` runs at batch 1; nodes
are grouped as 1x1 convolution, depthwise convolution, other convolution, fully connected and
the rest, and the mean per inference is printed in ms. Profilers add overhead of their own, so
compare the kinds with each other, not these sums with the latencies of optimize_int8.py.
It also counts each kind's multiply-accumulates (from the FP32 graph's shapes) and prints the
rate each engine reached on them (GMAC/s), the figure to hold against the CPU's peak.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import optimize_int8 as int8_bench  # the companion script, for its inputs

KINDS = ("conv 1x1", "conv depthwise", "conv other", "fully connected", "rest")


def ort_kinds(model: Path) -> dict[str, tuple[str, int, tuple[int, ...]]]:
    """Node name -> (op type, group, kernel shape) of the graph ORT runs (after fusions)."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / "optimized.onnx"
        options = ort.SessionOptions()
        options.optimized_model_filepath = str(saved)
        options.log_severity_level = 3
        ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        graph = onnx.load(str(saved)).graph
    inits = {t.name: tuple(t.dims) for t in graph.initializer}
    out = {}
    for node in graph.node:
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        weight = node.input[3] if node.op_type == "QLinearConv" else node.input[1:2]
        dims = inits.get(weight if isinstance(weight, str) else (weight[0] if weight else ""), ())
        out[node.name] = (node.op_type, group, dims[2:])
    return out


def kind_of(op: str, group: int, kernel: tuple[int, ...]) -> str:
    if "Conv" in op:
        if group > 1:
            return "conv depthwise"
        return "conv 1x1" if kernel == (1, 1) else "conv other"
    return "fully connected" if op in ("Gemm", "QGemm", "MatMul", "FullyConnected") else "rest"


def profile_ort(model: Path, x: np.ndarray, threads: int, runs: int) -> dict[str, float]:
    import onnxruntime as ort

    nodes = ort_kinds(model)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.enable_profiling = True
    options.log_severity_level = 3
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    for _ in range(10 + runs):
        session.run(None, {"input": x})
    trace = Path(session.end_profiling())
    events = json.loads(trace.read_text())
    trace.unlink()
    totals: dict[str, float] = defaultdict(float)
    timed = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    for event in timed[-runs * len({e["name"] for e in timed}) :]:
        op, group, kernel = nodes.get(event["name"][: -len("_kernel_time")], ("?", 1, ()))
        totals[kind_of(op, group, kernel)] += event["dur"] / 1000 / runs  # us -> ms per run
    return dict(totals)


def profile_openvino(
    model: Path, x: np.ndarray, threads: int, runs: int, hint: str | None
) -> dict[str, float]:
    import openvino as ov

    config: dict[str, Any] = {"INFERENCE_NUM_THREADS": threads, "PERF_COUNT": True}
    if hint:
        config["INFERENCE_PRECISION_HINT"] = hint
    request = ov.Core().compile_model(str(model), "CPU", config).create_infer_request()
    for _ in range(10):
        request.infer({0: x})
    totals: dict[str, float] = defaultdict(float)
    for _ in range(runs):
        request.infer({0: x})
        for info in request.profiling_info:
            depthwise = info.node_type == "GroupConvolution" or "_dw_" in info.exec_type
            kind = (
                "conv depthwise"
                if depthwise
                else "conv 1x1"
                if "1x1" in info.exec_type
                else "conv other"
                if info.node_type == "Convolution"
                else "fully connected"
                if info.node_type.startswith("FullyConnected")
                else "rest"
            )
            totals[kind] += info.real_time.total_seconds() * 1000 / runs
    return dict(totals)


def macs_by_kind(model: Path, batch: int) -> dict[str, float]:
    """Multiply-accumulates per inference of ``batch`` samples, by layer kind (pure on the file)."""
    from onnx import numpy_helper, shape_inference

    proto = onnx.load(str(model))
    proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value = batch
    proto = shape_inference.infer_shapes(proto)
    values = [*proto.graph.value_info, *proto.graph.output]
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in values}
    weights = {i.name: numpy_helper.to_array(i).shape for i in proto.graph.initializer}
    macs: dict[str, float] = defaultdict(float)
    for node in proto.graph.node:
        if node.op_type not in ("Conv", "Gemm"):
            continue
        w = weights[node.input[1]]
        if node.op_type == "Gemm":
            macs["fully connected"] += batch * float(np.prod(w))
            continue
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        kind = kind_of("Conv", group, tuple(w[2:]))
        macs[kind] += float(np.prod(shapes[node.output[0]])) * float(np.prod(w[1:]))
    return dict(macs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--calibration", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--openvino-only", action="store_true", help="leave ONNX Runtime out")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    from edgeloop.optimize import ModelSource, create

    load_start = int8_bench.loadavg()
    splits = int8_bench.photo_splits(args.calibration, max(8, args.batch))
    x = np.ascontiguousarray(splits.test.x[: args.batch])
    rows: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        fp32, _ = int8_bench.effnet_onnx(Path(tmp), splits.test.x)
        opt = create("static-int8", samples=len(splits.train)).fit(splits)
        int8 = opt.apply(ModelSource(fp32), Path(tmp) / "int8.onnx").path
        macs = macs_by_kind(fp32, args.batch)
        for label, path in (("FP32", fp32), ("INT8 (preset)", int8)):
            if not args.openvino_only:
                rows[f"{label}, onnxruntime"] = profile_ort(path, x, args.threads, args.runs)
            rows[f"{label}, openvino default"] = profile_openvino(
                path, x, args.threads, args.runs, None
            )
            rows[f"{label}, openvino f32"] = profile_openvino(
                path, x, args.threads, args.runs, "f32"
            )
    print("| model, engine | " + " | ".join(KINDS) + " | sum |")
    print("|---" * (len(KINDS) + 2) + "|")
    for label, totals in rows.items():
        cells = " | ".join(f"{totals.get(k, 0.0):.2f}" for k in KINDS)
        print(f"| {label} | {cells} | {sum(totals.values()):.2f} |")
    print("\nGMAC/s reached per kind (multiply-accumulates / profiled time):\n")
    conv_kinds = [k for k in KINDS if k in macs]
    print("| model, engine | " + " | ".join(conv_kinds) + " |")
    print("|---" * (len(conv_kinds) + 1) + "|")
    for label, totals in rows.items():
        rates = [macs[k] / (totals[k] * 1e6) if totals.get(k) else None for k in conv_kinds]
        cells = " | ".join("n/a" if r is None else f"{r:.1f}" for r in rates)
        print(f"| {label} | {cells} |")
    mmacs = ", ".join(f"{k} {v / 1e6:.1f}" for k, v in macs.items())
    print(
        f"\nms per inference (batch {args.batch}), {args.threads} thread(s), {args.runs} profiled "
        f"runs; million MACs per inference: {mmacs}; load average start {load_start}, end "
        f"{int8_bench.loadavg()}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
