"""Pruning, QAT and distillation, measured in one run on this machine (issue 3, items 2-4).

    .venv/bin/python bench/optimize_torch.py [--out DIR] [--threads 1] [--seeds 3] [--quick]

(``--out`` defaults to a folder in the system temp dir: models, results.json, results.md.)

Every figure it prints is measured in that run: accuracy by ``edgeloop.bench`` on the held-out
test split (never seen by training, calibration or early stopping), latency from timed ONNX
Runtime runs, sizes from the files. What it does:

1. Trains a wide CNN (zoo ``cnn``, width 64) on digits. Latency of an 8x8 input is only
   compute-bound with wide layers: at width 64 the two inner convolutions hold ~7 M of the
   ~8 M multiply-accumulates, so removing channels shows up in the timings.
2. ``prune-structured(ratio=0.5)`` + fine-tune, and ``prune-unstructured(sparsity=0.8)``, of it.
   Latency is measured in alternating rounds (parent, variant, parent, ...) and the median
   round's p50 is kept, so a burst of load from other work hits both models alike.
3. ``distill`` of it into ``cnn`` width 8, beside the same student trained without the teacher.
4. QAT against static-INT8 PTQ (``static-int8``, ONNX Runtime's quantize_static, min-max
   calibration, per-tensor and per-channel weights) on small models where INT8 is least
   forgiving: a depthwise-separable CNN (``ds-cnn`` width 8) on digits and a 1D CNN (``cnn1d``
   width 4) on ItalyPowerDemand (UCR archive, shipped with sktime), over several training seeds.
   A control row fine-tunes the FP32 parent with QAT's schedule but no fake quantization, so
   the gain from the extra epochs is not credited to QAT.

Prints one JSON object on stdout; the markdown tables go to ``--out``/results.md and stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from edgeloop.bench.machine import describe_machine  # noqa: E402
from edgeloop.bench.measure import run_benchmark  # noqa: E402
from edgeloop.data import load_bundled, stratified_split  # noqa: E402
from edgeloop.data.dataset import Dataset, Splits  # noqa: E402
from edgeloop.optimize import ModelSource, Variant, create  # noqa: E402
from edgeloop.optimize.sparsity import compressed_size, onnx_weight_sparsity  # noqa: E402

SPLIT = {"val": 0.15, "test": 0.3}  # 30 % test: 539 digits / 329 IPD samples to score on


@dataclass
class Row:
    label: str
    path: Path
    figures: dict[str, Any]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def split(ds: Dataset) -> Splits:
    return stratified_split(ds, seed=0, **SPLIT)


def train_parent(
    root: Path, splits: Splits, arch: str, width: int, epochs: int, seed: int = 0
) -> tuple[ModelSource, float]:
    """Train, write checkpoint + FP32 ONNX; returns the source and the training seconds."""
    from edgeloop.formats.onnx_export import export_onnx
    from edgeloop.training import ArchConfig, FitConfig, deployable, fit, save_checkpoint

    config = ArchConfig(arch, splits.train.sample_shape, splits.train.num_classes, width=width)
    result = fit(config, splits, FitConfig(epochs=epochs, seed=seed), progress=False)
    ckpt = save_checkpoint(root / "ckpt", result.module, config, result.config, None)
    onnx = export_onnx(deployable(result.module, config), splits.train.x[:1], root / "fp32.onnx")
    return ModelSource(onnx.path, ckpt, f"{arch}{width}"), result.train_seconds


def accuracy(path: Path, test: Dataset, threads: int) -> float:
    """Accuracy on the whole test split, by edgeloop.bench (one untimed pass)."""
    report = run_benchmark(
        path, batch_size=1, runs=1, warmup=0, threads=threads, data=test, split_name="test"
    )
    value = report.measurement.accuracy
    if value is None:
        raise RuntimeError(f"{path}: no accuracy measured")
    return value


def timed(rows: list[Row], test: Dataset, threads: int, runs: int, rounds: int) -> None:
    """p50 / p90 latency at batch 1 and 32 (median round), throughput, accuracy, size."""
    for batch, n in ((1, runs), (32, max(20, runs // 8))):
        p50s: dict[str, list[float]] = {r.label: [] for r in rows}
        last: dict[str, Any] = {}
        for _ in range(rounds):
            for r in rows:
                m = run_benchmark(
                    r.path,
                    batch_size=batch,
                    runs=n,
                    warmup=max(10, n // 10),
                    threads=threads,
                    data=test,
                    split_name="digits test",
                    evaluate=False,
                ).measurement
                p50s[r.label].append(m.latency_ms.p50)
                last[r.label] = m
        for r in rows:
            r.figures[f"p50_ms_b{batch}"] = statistics.median(p50s[r.label])
            r.figures[f"p50_ms_b{batch}_rounds"] = p50s[r.label]
            r.figures[f"throughput_b{batch}"] = batch / (r.figures[f"p50_ms_b{batch}"] / 1e3)
            r.figures[f"runs_b{batch}"] = n
    for r in rows:
        r.figures["accuracy"] = accuracy(r.path, test, threads)
        r.figures["size_bytes"] = r.path.stat().st_size


def pruning(root: Path, splits: Splits, args: argparse.Namespace) -> dict[str, Any]:
    log("pruning: training the wide CNN (cnn, width 64)")
    source, seconds = train_parent(root / "wide", splits, "cnn", 64, args.epochs)
    log("pruning: prune-structured(ratio=0.5) + fine-tune")
    structured = create("prune-structured", ratio=0.5, epochs=args.fine_tune).fit(splits)
    sv = structured.apply(source, root / "wide" / "structured.onnx")
    log("pruning: prune-unstructured(sparsity=0.8)")
    unstructured = create("prune-unstructured", sparsity=0.8, steps=3, epochs=3).fit(splits)
    uv = unstructured.apply(source, root / "wide" / "unstructured.onnx")
    rows = [Row("fp32", source.onnx, {}), Row("structured", sv.path, {})]
    log("pruning: timing FP32 vs structured")
    timed(rows, splits.test, args.threads, args.runs, args.rounds)
    sparse = Row("unstructured", uv.path, {})
    sparse.figures["accuracy"] = accuracy(uv.path, splits.test, args.threads)
    for r in (*rows, sparse):
        r.figures["size"] = compressed_size(r.path).to_dict()
        r.figures["weight_sparsity"] = onnx_weight_sparsity(r.path).to_dict()
    return {
        "parent_train_seconds": seconds,
        "rows": {r.label: r.figures for r in (*rows, sparse)},
        "structured_variant": _variant(sv),
        "unstructured_variant": _variant(uv),
    }


def distillation(root: Path, splits: Splits, args: argparse.Namespace) -> dict[str, Any]:
    teacher = ModelSource(root / "wide" / "fp32.onnx", root / "wide" / "ckpt")
    log("distill: cnn width 64 -> cnn width 8, and the same student without the teacher")
    opt = create("distill", width_ratio=0.125, temperature=4.0, alpha=0.7, epochs=args.epochs)
    v = opt.fit(splits).apply(teacher, root / "distill" / "student.onnx")
    rows = [
        Row("teacher", teacher.onnx, {"parameters": v.extra["teacher"]["parameters"]}),
        Row("student (distilled)", v.path, {"parameters": v.extra["student"]["parameters"]}),
        Row(
            "student (no teacher)",
            Path(v.extra["no_teacher"]["output"]),
            {"parameters": v.extra["no_teacher"]["parameters"]},
        ),
    ]
    timed(rows, splits.test, args.threads, args.runs, args.rounds)
    return {"rows": {r.label: r.figures for r in rows}, "variant": _variant(v)}


def _ipd() -> Dataset:
    from edgeloop.data.bundled import package_dir
    from edgeloop.data.loaders import load_ts

    base = package_dir("sktime", "ItalyPowerDemand") / "datasets" / "data" / "ItalyPowerDemand"
    train, test = (load_ts(base / f"ItalyPowerDemand_{p}.ts") for p in ("TRAIN", "TEST"))
    return train.with_arrays(
        np.concatenate([train.x, test.x]), np.concatenate([train.y, test.y]), "ItalyPowerDemand"
    )


def fp32_control(source: ModelSource, splits: Splits, out: Path, qat: dict[str, Any]) -> Path:
    """The parent fine-tuned with QAT's schedule (``qat``'s settings), without fake quant."""
    from edgeloop.formats.onnx_export import export_onnx
    from edgeloop.optimize.finetune import held_in
    from edgeloop.optimize.pruned_checkpoint import load_module
    from edgeloop.training import FitConfig, deployable, fit

    if source.checkpoint is None:
        raise RuntimeError(f"{source.onnx}: the control needs the parent's checkpoint")
    module, arch = load_module(source.checkpoint)
    schedule = {k: qat[k] for k in ("epochs", "lr", "batch_size", "patience", "seed")}
    fit(arch, held_in(splits), FitConfig(**schedule), module=module, progress=False)
    return export_onnx(deployable(module, arch), splits.train.x[:1], out).path


def qat_vs_ptq(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    cases = [
        ("digits", load_bundled("digits"), "ds-cnn", 8),
        ("ItalyPowerDemand", _ipd(), "cnn1d", 4),
    ]
    out: dict[str, Any] = {}
    for name, ds, arch, width in cases:
        splits = split(ds)
        seeds = []
        for seed in range(args.seeds):
            folder = root / "qat" / f"{name}-{arch}{width}-seed{seed}"
            log(f"qat: {name} {arch} width {width} seed {seed}")
            source, _ = train_parent(folder, splits, arch, width, args.epochs, seed=seed)
            acc = {"fp32": accuracy(source.onnx, splits.test, args.threads)}
            for per_channel in (False, True):
                tag = "per-channel" if per_channel else "per-tensor"
                ptq = create("static-int8", per_channel=per_channel).fit(splits)
                acc[f"ptq {tag}"] = accuracy(
                    ptq.apply(source, folder / f"ptq-{tag}.onnx").path, splits.test, args.threads
                )
                qat = create("qat", per_channel=per_channel, epochs=args.qat_epochs).fit(splits)
                acc[f"qat {tag}"] = accuracy(
                    qat.apply(source, folder / f"qat-{tag}.onnx").path, splits.test, args.threads
                )
            control = fp32_control(source, splits, folder / "fp32-finetuned.onnx", qat.get_params())
            acc["fp32 + same fine-tune"] = accuracy(control, splits.test, args.threads)
            seeds.append(acc)
        out[f"{name} {arch} width {width}"] = {"test_samples": len(splits.test), "seeds": seeds}
    return out


def _variant(v: Variant) -> dict[str, Any]:
    return v.to_dict()


def markdown(report: dict[str, Any]) -> str:
    lines: list[str] = []
    p = report["pruning"]["rows"]
    fp = p["fp32"]
    lines += [
        "| model | accuracy | p50 b1 (ms) | p50 b32 (ms) | speed-up b1 / b32 | file | zstd "
        "| weight sparsity |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, r in p.items():
        b1 = r.get("p50_ms_b1")
        speed = (
            f"{fp['p50_ms_b1'] / b1:.2f}x / {fp['p50_ms_b32'] / r['p50_ms_b32']:.2f}x"
            if b1 is not None
            else "not claimed"
        )
        lat1 = f"{b1:.3f}" if b1 is not None else "n/a"
        lat32 = f"{r['p50_ms_b32']:.3f}" if b1 is not None else "n/a"
        lines.append(
            f"| {label} | {100 * r['accuracy']:.2f} % | {lat1} | {lat32} | {speed} | "
            f"{r['size']['raw_bytes']:,} B | {r['size']['zstd_bytes']:,} B | "
            f"{100 * r['weight_sparsity']['sparsity']:.1f} % |"
        )
    d = report["distillation"]["rows"]
    lines += [
        "",
        "| model | parameters | accuracy | p50 b1 (ms) | p50 b32 (ms) | file |",
        "|---|---|---|---|---|---|",
    ]
    for label, r in d.items():
        lines.append(
            f"| {label} | {r['parameters']:,} | {100 * r['accuracy']:.2f} % | "
            f"{r['p50_ms_b1']:.3f} | {r['p50_ms_b32']:.3f} | {r['size_bytes']:,} B |"
        )
    for case, body in report["qat"].items():
        keys = list(body["seeds"][0])
        lines += [
            "",
            f"{case}, {body['test_samples']} test samples, accuracy (%):",
            "",
            "| seed | " + " | ".join(keys) + " |",
            "|---" * (len(keys) + 1) + "|",
        ]
        for seed, acc in enumerate(body["seeds"]):
            lines.append(f"| {seed} | " + " | ".join(f"{100 * acc[k]:.2f}" for k in keys) + " |")
        means = [statistics.mean(a[k] for a in body["seeds"]) for k in keys]
        lines.append("| mean | " + " | ".join(f"{100 * m:.2f}" for m in means) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=Path(tempfile.gettempdir()) / "edgeloop-optimize-torch"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=400, help="timed runs at batch 1")
    parser.add_argument("--rounds", type=int, default=5, help="alternating timing rounds")
    parser.add_argument("--epochs", type=int, default=30, help="training epochs (max)")
    parser.add_argument("--fine-tune", type=int, default=10, help="structured fine-tune epochs")
    parser.add_argument("--qat-epochs", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=3, help="training seeds for QAT vs PTQ")
    parser.add_argument("--quick", action="store_true", help="tiny settings, to test the script")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.rounds, args.epochs, args.fine_tune, args.seeds = 20, 1, 2, 1, 1
        args.qat_epochs = 1
    import torch

    torch.set_num_threads(args.threads)  # training too: a 2nd thread only waits on a busy host
    args.out.mkdir(parents=True, exist_ok=True)
    start, load = time.time(), os.getloadavg()
    digits = split(load_bundled("digits"))
    report: dict[str, Any] = {
        "command": " ".join(["bench/optimize_torch.py", *sys.argv[1:]]),
        "machine": describe_machine().to_dict(),
        "threads": args.threads,
        "data": {"digits": {k: len(getattr(digits, k)) for k in ("train", "val", "test")}},
        "load_average_before": load,
    }
    report["pruning"] = pruning(args.out, digits, args)
    report["distillation"] = distillation(args.out, digits, args)
    report["qat"] = qat_vs_ptq(args.out, args)
    report["load_average_after"] = os.getloadavg()
    report["seconds"] = time.time() - start
    table = markdown(report)
    (args.out / "results.md").write_text(table, encoding="utf-8")
    (args.out / "results.json").write_text(json.dumps(report, indent=2, default=str))
    print(table, file=sys.stderr)
    print(json.dumps(report, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
