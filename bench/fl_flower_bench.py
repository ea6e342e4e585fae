"""Issue 14's protocol: the plain in-process loop and Flower's simulation side by side, one run.

    .venv/bin/python bench/fl_flower_bench.py                     # IID, non-IID, DP, both sides
    .venv/bin/python bench/fl_flower_bench.py --dp-runs 3 --format json
    .venv/bin/python bench/fl_flower_bench.py --dp-runs 20 --dp-only --format json > a.json
    .venv/bin/python bench/fl_flower_bench.py --dp-runs 20 --dp-seed-start 20 --dp-only \
        --format json > b.json                    # edgeloop seeds 20..39, 20 more Flower runs
    .venv/bin/python bench/fl_flower_bench.py --combine a.json b.json   # both files' DP runs

Flower lives in its own environment (it pulls Ray; edgeloop's .venv stays free of it):

    python3.11 -m venv .venv-flower
    .venv-flower/bin/pip install 'flwr[simulation]' torch==2.13.0 scikit-learn

The data and shares are made once here (bench/fl_bench.py: digits /16 float32, 1,437 / 360, IID
permutation + array_split seed 42, Dirichlet(0.5) seed 42) and handed to Flower as one .npz, so
both sides train on the same bytes with the same client code (edgeloop's ``train_local``); the
Flower side (bench/flower_sim.py) runs in ``.venv-flower/bin/python`` as a subprocess, and the
memory of its process tree (the driver, Ray's GCS and raylet, the actor workers) is sampled from
/proc every 0.2 s, as bench/fl_fleet_bench.py samples edgeloop's: the peak of the summed RSS (a
shared page counts once per process) and the peak of the summed PSS (smaps_rollup: once in all).
DP: edgeloop's DP-FedAvg (noise seeds 0..N-1, epsilon from dp-accounting at delta
1e-5) against Flower's ``DifferentialPrivacyServerSideFixedClipping`` (unseeded noise), both with
noise multiplier 1.0, clip 1.0, 10 of 10 clients per round. The runs alternate (edgeloop seed k,
then Flower run k), so both sides see the same machine. ``dp_comparison`` summarises the round-20
accuracies of the two sides: n, mean, median, sample sd, min / max and quartiles per side, and for
mean(edgeloop) - mean(Flower) Welch's t interval (two-sided 95 % and the one-sided 95 % lower
bound) and a percentile bootstrap (10,000 resamples of each side, numpy seed 0) of the same, the
one-sided Mann-Whitney p (edgeloop lower) and the Brown-Forsythe p (equal spread); with fewer than
2 runs a side the spread, intervals and tests are None.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

from fl_bench import dirichlet_parts, federate, iid_parts, load, summary  # noqa: E402
from fl_fleet_bench import _tree_memory_mb  # noqa: E402

FLOWER_PY = ROOT / ".venv-flower" / "bin" / "python"


def write_shares(path: Path, data: Any, parts: dict[str, list[np.ndarray]]) -> None:
    arrays = {
        "x_train": data.x_train.numpy(), "y_train": data.y_train.numpy(),
        "x_test": data.x_test.numpy(), "y_test": data.y_test.numpy(),
    }  # fmt: skip
    for name, shares in parts.items():
        for k, idx in enumerate(shares):
            arrays[f"part_{name}_{k}"] = idx
    np.savez(path, **arrays)


def run_flower(npz: Path, partition: str, dp: bool) -> dict[str, Any]:
    """One Flower simulation as a subprocess; its JSON plus wall time and tree peak RSS."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")
    cmd = [str(FLOWER_PY), str(BENCH / "flower_sim.py"), str(npz), "--partition", partition]
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd + (["--dp"] if dp else []), env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    peak = [0.0, 0.0]  # RSS sum, PSS sum

    def sample() -> None:
        while proc.poll() is None:
            rss, pss = _tree_memory_mb([proc.pid])
            peak[0], peak[1] = max(peak[0], rss), max(peak[1], pss)
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate(timeout=600)
    wall = time.perf_counter() - start
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"Flower run failed ({proc.returncode}):\n{err[-3000:]}")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    acc = result["accuracy_per_round"]
    result.update(
        run="flower-dp" if dp else "flower", wall_s=wall, peak_rss_tree_mb=peak[0],
        peak_pss_tree_mb=peak[1],
        accuracy={str(r): round(acc[r - 1], 4) for r in (5, 10, 20)},
        round_s_median_2_20=statistics.median(result["round_s"][1:]),
        accuracy_per_round=[round(a, 4) for a in acc],
    )  # fmt: skip
    return result


def _describe(values: list[float]) -> dict[str, Any]:
    a = np.asarray(values, dtype=np.float64)
    q1, q3 = (float(v) for v in np.quantile(a, [0.25, 0.75]))
    return {"n": len(a), "mean": float(a.mean()), "median": float(np.median(a)),
            "sd": float(a.std(ddof=1)) if len(a) > 1 else None, "min": float(a.min()),
            "q1": q1, "q3": q3, "max": float(a.max()),
            "values": [round(v, 4) for v in values]}  # fmt: skip


def dp_comparison(ours: list[float], flower: list[float]) -> dict[str, Any]:
    """Round-20 accuracy, edgeloop's DP runs against Flower's: the difference of means with
    Welch's t interval and a percentile bootstrap (one-sided lower bounds answer "at least")."""
    result: dict[str, Any] = {"edgeloop": _describe(ours), "flower": _describe(flower)}
    a, b = np.asarray(ours, dtype=np.float64), np.asarray(flower, dtype=np.float64)
    diff = float(a.mean() - b.mean())
    result["mean_diff"] = diff
    result["median_diff"] = float(np.median(a) - np.median(b))
    if min(len(a), len(b)) < 2:
        result.update(welch=None, bootstrap=None, reason="fewer than 2 runs on a side")
        return result
    from scipy import stats  # type: ignore[import-untyped]

    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = float(np.sqrt(va + vb))
    df = float((va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1)))
    t95, t975 = float(stats.t.ppf(0.95, df)), float(stats.t.ppf(0.975, df))
    result["welch"] = {"se": se, "df": df, "ci95": [diff - t975 * se, diff + t975 * se],
                       "lower95_one_sided": diff - t95 * se,
                       "p_one_sided_edgeloop_lower": float(stats.t.cdf(diff / se, df))}  # fmt: skip
    result["mann_whitney_p_edgeloop_lower"] = float(
        stats.mannwhitneyu(a, b, alternative="less").pvalue
    )
    result["brown_forsythe_p_equal_spread"] = float(stats.levene(a, b, center="median").pvalue)
    rng = np.random.default_rng(0)
    boot = (rng.choice(a, (10_000, len(a))).mean(axis=1)
            - rng.choice(b, (10_000, len(b))).mean(axis=1))  # fmt: skip
    result["bootstrap"] = {"resamples": 10_000, "seed": 0,
                           "ci95": [float(np.quantile(boot, 0.025)),
                                    float(np.quantile(boot, 0.975))],
                           "lower95_one_sided": float(np.quantile(boot, 0.05)),
                           "share_below_zero": float((boot < 0).mean())}  # fmt: skip
    return result


def combine(paths: list[Path]) -> dict[str, Any]:
    """dp_comparison over the DP runs of several earlier ``--format json`` outputs, pooled."""
    ours: list[float] = []
    flower: list[float] = []
    seeds: list[int] = []
    for path in paths:
        doc = json.loads(path.read_text())
        runs = [p for p in doc["plain"] if p["run"] == "dp"]
        ours += [p["accuracy"]["20"] for p in runs]
        seeds += [p["noise_seed"] for p in runs]
        flower += [f["accuracy"]["20"] for f in doc["flower"] if f["run"] == "flower-dp"]
    if len(set(seeds)) != len(seeds):
        raise SystemExit(f"edgeloop noise seeds repeat across {paths}: {sorted(seeds)}")
    return {"files": [str(p) for p in paths], "edgeloop_noise_seeds": seeds,
            "dp_comparison": dp_comparison(ours, flower)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dp-runs", type=int, default=1, help="DP runs on each side")
    parser.add_argument("--dp-seed-start", type=int, default=0, help="edgeloop's first noise seed")
    parser.add_argument("--dp-only", action="store_true", help="skip the plain IID / non-IID pair")
    parser.add_argument("--combine", nargs="+", type=Path, metavar="JSON",
                        help="run nothing: dp_comparison over the DP runs of earlier --format "
                             "json outputs")  # fmt: skip
    parser.add_argument("--format", choices=["text", "json"], default="text")
    args = parser.parse_args()
    if args.combine:
        print(json.dumps(combine(args.combine), indent=2))
        return
    if not FLOWER_PY.exists():
        raise SystemExit(f"{FLOWER_PY} not found: create it as this file's docstring says")
    torch.set_num_threads(1)
    data = load()
    parts = {"iid": iid_parts(len(data.x_train)), "noniid": dirichlet_parts(data.y_train.numpy())}
    plain, flower = [], []
    with tempfile.TemporaryDirectory() as tmp:
        npz = Path(tmp) / "digits_shares.npz"
        write_shares(npz, data, parts)
        for partition in () if args.dp_only else ("iid", "noniid"):
            t0 = time.perf_counter()
            plain.append({**summary(federate(data, parts[partition], "plain", partition)),
                          "wall_s": time.perf_counter() - t0})  # fmt: skip
            flower.append(run_flower(npz, partition, dp=False))
        for seed in range(args.dp_seed_start, args.dp_seed_start + args.dp_runs):
            t0 = time.perf_counter()
            plain.append({**summary(federate(data, parts["iid"], "dp", "iid", dp_seed=seed)),
                          "wall_s": time.perf_counter() - t0})  # fmt: skip
            flower.append(run_flower(npz, "iid", dp=True))
            print(f"DP run {seed - args.dp_seed_start + 1}/{args.dp_runs}: edgeloop seed {seed} "
                  f"{plain[-1]['accuracy']['20']:.4f}, Flower {flower[-1]['accuracy']['20']:.4f}, "
                  f"load {os.getloadavg()}", file=sys.stderr, flush=True)  # fmt: skip
    for p, f in zip(plain, flower, strict=True):
        if p["run"] == "plain":
            gaps = np.abs(np.subtract(p["accuracy_per_round"], f["accuracy_per_round"]))
            f["max_gap_vs_plain_pp"] = float(gaps.max() * 100)
    result: dict[str, Any] = {
        "command": " ".join(["bench/fl_flower_bench.py", *sys.argv[1:]]),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "python": platform.python_version(), "torch": torch.__version__,
                    "load_avg": os.getloadavg()},
        "plain_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "plain": plain,
        "flower": flower,
        "dp_comparison": dp_comparison(
            [p["accuracy"]["20"] for p in plain if p["run"] == "dp"],
            [f["accuracy"]["20"] for f in flower if f["run"] == "flower-dp"],
        ) if args.dp_runs else None,
    }  # fmt: skip
    if args.format == "json":
        print(json.dumps(result, indent=2))
        return
    if not flower:
        return
    print(f"flwr {flower[0]['flwr']}, torch {torch.__version__}, load {os.getloadavg()}")
    head = ("side", "run", "part", "acc@5", "acc@10", "acc@20", "s/round", "wall", "RSS MB",
            "PSS MB", "note")  # fmt: skip
    print("{:8} {:10} {:7} {:>7} {:>7} {:>7} {:>8} {:>6} {:>7} {:>7}  {}".format(*head))
    for side, rows in (("plain", plain), ("flower", flower)):
        for s in rows:
            a = s["accuracy"]
            rss = s.get("peak_rss_tree_mb", result["plain_peak_rss_mb"])
            pss = s.get("peak_pss_tree_mb", float("nan"))  # one process: its RSS (ru_maxrss)
            note = f"eps={s['epsilon']:.2f}" if s.get("epsilon") else ""
            if "max_gap_vs_plain_pp" in s:
                note = f"max gap vs plain {s['max_gap_vs_plain_pp']:.2f} pp"
            print(
                f"{side:8} {s['run']:10} {s['partition']:7} {a['5']:7.4f} {a['10']:7.4f} "
                f"{a['20']:7.4f} {s['round_s_median_2_20']:8.3f} {s['wall_s']:6.1f} {rss:7.0f} "
                f"{pss:7.0f}"
                f"  {note}"
            )
    cmp = result["dp_comparison"]
    if cmp:
        for side in ("edgeloop", "flower"):
            d = cmp[side]
            sd = "n/a" if d["sd"] is None else f"{d['sd']:.4f}"
            print(f"DP acc@20 {side:8} n={d['n']} mean {d['mean']:.4f} median {d['median']:.4f} "
                  f"sd {sd} min {d['min']:.4f} q1 {d['q1']:.4f} q3 {d['q3']:.4f} "
                  f"max {d['max']:.4f}")  # fmt: skip
        print(f"mean(edgeloop) - mean(Flower) = {cmp['mean_diff']:+.4f}")
        for name in ("welch", "bootstrap"):
            if cmp[name]:
                lo, hi = cmp[name]["ci95"]
                print(f"  {name}: 95 % [{lo:+.4f}, {hi:+.4f}], one-sided 95 % lower bound "
                      f"{cmp[name]['lower95_one_sided']:+.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
