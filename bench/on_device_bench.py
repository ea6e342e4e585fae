"""On-device incremental training on digits under a simulated field drift, measured per worker.

    .venv/bin/python bench/on_device_bench.py [--seeds 0 1 2] [--epochs 25] [--lr 3e-3] \
        [--replay-share 0.75] [--json FILE]

Per seed: digits (1797 8x8 images) is cut by a seeded permutation into a training part (700),
val (150), the original test split (300) and a field pool (647). The zoo CNN (width 32) is
trained on the training part (15 epochs, early stopping). Field drift: the field images are
seen through a different exposure, x' = 0.5 x + 0.3 (half the contrast, a grey background).
200 labelled drifted images are the node's new data; the other 447 drifted images are the
held-out drifted set. The replay buffer starts with a 500-sample reservoir of the training part,
standing in for the samples a node captured before the drift.

Each configuration (replay on/off x all layers / last layer only; BatchNorm running statistics
kept, the default, plus one run that lets them follow the new batches) runs as its own worker
process (``python -m edgeloop.training.on_device_worker``, one torch thread; 25 epochs, Adam
lr 3e-3, batches of 32 of which 75 % are replayed samples when replay is on), whose JSON line
gives the accuracies, the wall time of the run and the worker's peak RSS (VmHWM) before and after
the ONNX export. Prints a markdown table on stderr and the rows as JSON on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgeloop.data import load_bundled
from edgeloop.data.dataset import Splits
from edgeloop.training import ArchConfig, FitConfig, fit, save_checkpoint
from edgeloop.training.replay import ReplayBuffer

CONFIGS = {  # name: (replay buffer size, last layers trained, BatchNorm statistics updated)
    "replay, all layers": (500, None, False),
    "replay, last layer": (500, 1, False),
    "no replay, all layers": (0, None, False),
    "no replay, last layer": (0, 1, False),
    "replay, all layers, BN stats updated": (500, None, True),
}


def drift(x: np.ndarray) -> np.ndarray:
    """A different exposure: half the contrast on a grey background."""
    return (0.5 * x + 0.3).astype(np.float32)


def prepare(seed: int, work: Path, epochs: int) -> dict[str, Any]:
    torch.manual_seed(seed)
    d = load_bundled("digits")
    perm = np.random.default_rng(seed).permutation(len(d))
    train, val, test, field = perm[:700], perm[700:850], perm[850:1150], perm[1150:]
    splits = Splits(d.subset(train, "train"), d.subset(val, "val"), d.subset(test, "test"), seed)
    arch = ArchConfig("cnn", (1, 8, 8), 10)
    t0 = time.perf_counter()
    result = fit(arch, splits, FitConfig(epochs=epochs, seed=seed), progress=False)
    base_seconds = time.perf_counter() - t0
    save_checkpoint(work / "base", result.module, arch, result.config, result.test_metrics,
                    dataset=splits.train)  # fmt: skip
    xf, yf = drift(d.x[field]), d.y[field]
    np.savez(work / "new.npz", x=xf[:200], y=yf[:200])
    np.savez(work / "new_test.npz", x=xf[200:], y=yf[200:])
    np.savez(work / "old.npz", x=splits.test.x, y=splits.test.y)
    buffer = ReplayBuffer(500, (1, 8, 8), seed=seed)
    buffer.add(splits.train.x, splits.train.y)
    buffer.save(work / "replay-start.npz")
    return {"base_test_accuracy": result.test_metrics.accuracy, "base_fit_seconds": base_seconds}


def run_worker(work: Path, name: str, seed: int, opts: argparse.Namespace) -> dict[str, Any]:
    size, last, update_stats = CONFIGS[name]
    tag = name.replace(", ", "-").replace(" ", "-")
    replay = work / f"replay-{tag}.npz"
    replay.write_bytes((work / "replay-start.npz").read_bytes())
    args = [
        sys.executable, "-m", "edgeloop.training.on_device_worker",
        "--checkpoint", str(work / "base"), "--data", str(work / "new.npz"),
        "--new-test", str(work / "new_test.npz"), "--old-data", str(work / "old.npz"),
        "--replay", str(replay), "--out", str(work / f"out-{tag}"),
        "--epochs", str(opts.epochs), "--lr", str(opts.lr), "--replay-size", str(size),
        "--replay-share", str(opts.replay_share),
        "--seed", str(seed), "--threads", "1", "--max-seconds", "120",
        "--max-memory-mb", "2000", "--node-id", "bench", "--parent-ref", "digits-cnn:1",
    ]  # fmt: skip
    if last is not None:
        args += ["--last-layers", str(last)]
    if update_stats:
        args.append("--update-norm-stats")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
    process_seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"worker failed ({proc.returncode}): {proc.stdout}{proc.stderr}")
    row: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    lost = row["old_accuracy_before"] - row["new_accuracy_before"]
    gained = row["new_accuracy_after"] - row["new_accuracy_before"]
    row.update(config=name, seed=seed, process_seconds=process_seconds,
               recovered_share=gained / lost if lost > 0 else None)  # fmt: skip
    return row


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| config | seed | drifted acc before -> after | recovered | original test before -> "
        "after | forgetting pp | accepted | trainable params | run s | worker s | peak RSS "
        "train / total MiB |\n|---|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        rec = "n/a" if r["recovered_share"] is None else f"{100 * r['recovered_share']:.0f} %"
        verdict = "yes" if r["accepted"] else f"no ({r['rejection']})"
        lines.append(
            f"| {r['config']} | {r['seed']} | {r['new_accuracy_before']:.3f} -> "
            f"{r['new_accuracy_after']:.3f} | {rec} | {r['old_accuracy_before']:.3f} -> "
            f"{r['old_accuracy_after']:.3f} | {r['forgetting_pp']:.1f} | {verdict} | "
            f"{r['trainable_parameters']} | {r['wall_seconds']:.1f} | {r['process_seconds']:.1f} "
            f"| {r['train_peak_rss_mb']:.0f} / {r['peak_rss_mb']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=25, help="incremental epochs")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--replay-share", type=float, default=0.75, help="of every batch")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows: list[dict[str, Any]] = []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory(prefix="on-device-bench-") as tmp:
            work = Path(tmp)
            base = prepare(seed, work, epochs=15)
            for name in CONFIGS:
                row = run_worker(work, name, seed, args)
                rows.append({**row, **base})
                print(f"seed {seed} {name}: done", file=sys.stderr)
    print(table(rows), file=sys.stderr)
    out = json.dumps({"cpu": os.cpu_count(), "torch": torch.__version__, "rows": rows}, indent=1)
    if args.json is not None:
        args.json.write_text(out)
    print(out)


if __name__ == "__main__":
    main()
