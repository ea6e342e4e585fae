"""Streaming drift detection side by side: edgeloop's DriftMonitor, scipy KS and river ADWIN.

Issue 12's protocol, as written: the reference is a random half of a real data set; the
stream is 2,000 samples drawn with replacement from the other half, shown one at a time; from
t = 1,000 one shift: (a) covariate: +0.5 std on a fixed random 25 % of the features; (b) scale:
every feature x1.3; (c) prior: only 3 of the classes; (d) none, for false alarms. 10 stream
seeds (each seed also draws its own reference half). Alarms are counted with a 200-sample
refractory period. Data sets: digits (64 pixels), BasicMotions summarised as per-channel mean
and std (12 features, 40 reference rows), and the MIT-BIH window set (mitdb-anomaly, 64 points;
it has 2 classes, so "only 3 of the classes" does not exist there and the prior column is n/a).

Methods, inputs only: edgeloop (``DriftMonitor.update`` per sample, default settings, and with
``MonitorConfig(residual=True)``); scipy's two-sample KS per
feature against the reference, Bonferroni over features at 0.05, on the last 200 samples every
10 samples; river's ADWIN (default delta 0.002) on a per-sample distance score (Euclidean norm
of the sample standardised by the reference). With outputs: a LogisticRegression trained on
the reference half; the profile gets its 5-fold out-of-fold probabilities (held-out
confidences, as at registration) and the reference labels; reported are the prior shift seen
in the predictions, and the mean absolute error of the ATC accuracy estimate against the true
accuracy of the last 200 samples (from t = 200, every 10 samples) on the shifted streams.

    .venv/bin/python bench/drift_bench.py            # full run (a few minutes)
    .venv/bin/python bench/drift_bench.py --quick    # 2 seeds
    .venv/bin/python bench/drift_bench.py --plot docs/drift_score.png --json out.json

Needs the bench-drift extra (river, scipy) and datasets (scikit-learn, sktime).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from river import drift as river_drift
from scipy.stats import ks_2samp
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_predict
from threadpoolctl import threadpool_limits

from edgeloop.data import load_bundled
from edgeloop.monitoring import AlarmKind, DriftMonitor, MonitorConfig

DATASETS = ("digits", "basic-motions", "mitdb-anomaly")
KINDS = ("covariate", "scale", "prior", "none")
STREAM, SHIFT_AT, REFRACTORY = 2000, 1000, 200
KS_WINDOW, KS_EVERY, KS_ALPHA = 200, 10, 0.05
ACC_WINDOW, ACC_EVERY = 200, 10


def features(name: str) -> tuple[np.ndarray, np.ndarray]:
    ds = load_bundled(name)
    x = ds.x.astype(np.float64)
    if name == "basic-motions":  # (n, 6 channels, 100 steps) -> per-channel mean and std
        x = np.concatenate([x.mean(axis=2), x.std(axis=2)], axis=1)
    return x.reshape(len(x), -1), ds.y


@dataclass
class Tally:
    """Counted alarms of one method on one data set over all seeds."""

    delays: dict[str, list[int | None]] = field(default_factory=lambda: {k: [] for k in KINDS})
    false_alarms: int = 0
    no_shift_samples: int = 0
    micros: list[float] = field(default_factory=list)
    state_bytes: int | None = None

    def add(self, kind: str, alarm_times: list[int]) -> None:
        counted: list[int] = []
        for t in sorted(alarm_times):
            if not counted or t - counted[-1] >= REFRACTORY:
                counted.append(t)
        limit = STREAM if kind == "none" else SHIFT_AT
        self.false_alarms += sum(t < limit for t in counted)
        self.no_shift_samples += limit
        if kind != "none":
            after = [t - SHIFT_AT for t in counted if t >= SHIFT_AT]
            self.delays[kind].append(after[0] if after else None)

    def row(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for kind in KINDS[:3]:
            found = [d for d in self.delays[kind] if d is not None]
            out[kind] = {
                "detected": len(found),
                "seeds": len(self.delays[kind]),
                "median_delay": float(np.median(found)) if found else None,
            }
        out["false_alarms_per_1000"] = 1000 * self.false_alarms / max(self.no_shift_samples, 1)
        out["us_per_sample_p50"] = float(np.median(self.micros)) if self.micros else None
        out["state_bytes"] = self.state_bytes
        return out


def make_stream(
    kind: str, other: np.ndarray, y_other: np.ndarray, sd: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray] | None:
    """The 2,000-sample stream of one kind and its labels (None: the shift does not exist)."""
    d = other.shape[1]
    shifted = rng.choice(d, size=d // 4, replace=False)
    classes = np.unique(y_other)
    keep = rng.choice(classes, size=min(3, len(classes)), replace=False)
    idx = rng.integers(0, len(other), size=STREAM)
    if kind == "prior":
        if len(classes) <= 3:
            return None
        pool = np.flatnonzero(np.isin(y_other, keep))
        idx[SHIFT_AT:] = pool[rng.integers(0, len(pool), size=STREAM - SHIFT_AT)]
    x, y = other[idx].copy(), y_other[idx]
    if kind == "covariate":
        x[SHIFT_AT:, shifted] += 0.5 * sd[shifted]
    elif kind == "scale":
        x[SHIFT_AT:] *= 1.3
    return x, y


def run_edgeloop(mon: DriftMonitor, x: np.ndarray, tally: Tally) -> list[int]:
    mon.reset()
    times, clock = [], time.perf_counter
    for t in range(len(x)):
        start = clock()
        alarm = mon.update(x[t])
        tally.micros.append((clock() - start) * 1e6)
        if alarm is not None:
            times.append(t)
    return times


def run_ks(ref: np.ndarray, x: np.ndarray, tally: Tally) -> list[int]:
    live = ref.std(axis=0) > 0
    times, start = [], time.perf_counter()
    for t in range(KS_WINDOW - 1, len(x), KS_EVERY):
        window = x[t - KS_WINDOW + 1 : t + 1][:, live]
        p = ks_2samp(ref[:, live], window, axis=0).pvalue
        if (p < KS_ALPHA / live.sum()).any():
            times.append(t)
    tally.micros.append((time.perf_counter() - start) * 1e6 / len(x))
    return times


def run_adwin(ref: np.ndarray, x: np.ndarray, tally: Tally) -> list[int]:
    mu, sd = ref.mean(axis=0), ref.std(axis=0)
    live = sd > 0
    adwin = river_drift.ADWIN()
    times, start = [], time.perf_counter()
    for t in range(len(x)):
        adwin.update(float(np.linalg.norm((x[t, live] - mu[live]) / sd[live])))
        if adwin.drift_detected:
            times.append(t)
    tally.micros.append((time.perf_counter() - start) * 1e6 / len(x))
    return times


def run_outputs(
    mon: DriftMonitor, x: np.ndarray, probs: np.ndarray, correct: np.ndarray
) -> tuple[list[int], list[float]]:
    """Prediction-drift alarm times, and |estimated - true| accuracy every ACC_EVERY samples."""
    mon.reset()
    times, errors = [], []
    for t in range(len(x)):
        alarm = mon.update(x[t], probs[t])
        if alarm is not None and alarm.kind is AlarmKind.PREDICTION:
            times.append(t)
        if t >= ACC_WINDOW - 1 and (t + 1) % ACC_EVERY == 0:
            estimate = mon.performance.estimated_accuracy
            if estimate is not None:
                errors.append(abs(estimate - correct[t - ACC_WINDOW + 1 : t + 1].mean()))
    return times, errors


def bench_dataset(name: str, seeds: int, plot: dict[str, Any] | None) -> dict[str, Any]:
    x_all, y_all = features(name)
    methods = ("edgeloop", "edgeloop +residual", "scipy KS", "river ADWIN", "edgeloop outputs")
    tallies = {m: Tally() for m in methods}
    mae_shifted: list[float] = []
    mae_none: list[float] = []
    sizes, fit_s = [], []
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        perm = rng.permutation(len(x_all))
        half = len(x_all) // 2
        ref, other = x_all[perm[:half]], x_all[perm[half:]]
        y_ref, y_other = y_all[perm[:half]], y_all[perm[half:]]
        start = time.perf_counter()
        mon = DriftMonitor.fit(ref)
        fit_s.append(time.perf_counter() - start)
        sizes.append(mon.profile.size_bytes)
        tallies["edgeloop"].state_bytes = mon.state_bytes
        mon_res = DriftMonitor.fit(ref, config=MonitorConfig(residual=True))
        tallies["edgeloop +residual"].state_bytes = mon_res.state_bytes
        model = LogisticRegression(max_iter=2000).fit(ref, y_ref)
        folds = min(5, int(np.bincount(y_ref).min()))
        oof = cross_val_predict(
            LogisticRegression(max_iter=2000), ref, y_ref, cv=folds, method="predict_proba"
        )
        mon_out = DriftMonitor.fit(ref, outputs=oof, labels=y_ref)
        for kind in KINDS:
            made = make_stream(
                kind, other, y_other, ref.std(axis=0), np.random.default_rng(1000 + seed)
            )
            if made is None:
                continue
            x, y = made
            times = run_edgeloop(mon, x, tallies["edgeloop"])
            tallies["edgeloop"].add(kind, times)
            res = tallies["edgeloop +residual"]
            res.add(kind, run_edgeloop(mon_res, x, res))
            tallies["scipy KS"].add(kind, run_ks(ref, x, tallies["scipy KS"]))
            tallies["river ADWIN"].add(kind, run_adwin(ref, x, tallies["river ADWIN"]))
            probs = model.predict_proba(x)
            correct = probs.argmax(axis=1) == y
            pred_times, errors = run_outputs(mon_out, x, probs, correct)
            tallies["edgeloop outputs"].add(kind, pred_times)
            (mae_none if kind == "none" else mae_shifted).extend(errors)
            if plot is not None and seed == 0 and kind == "covariate" and name == "digits":
                plot.update(trace(mon, x), alarms=times)
    return {
        "dataset": name,
        "features": x_all.shape[1],
        "reference_rows": len(x_all) // 2,
        "methods": {m: t.row() for m, t in tallies.items()},
        "accuracy_estimate_mae_shifted": float(np.mean(mae_shifted)) if mae_shifted else None,
        "accuracy_estimate_mae_no_shift": float(np.mean(mae_none)) if mae_none else None,
        "profile_bytes": int(np.median(sizes)),
        "fit_seconds_median": float(np.median(fit_s)),
    }


def trace(mon: DriftMonitor, x: np.ndarray) -> dict[str, Any]:
    """Input scores over one stream, each relative to its threshold."""
    mon.reset()
    stat = mon.profile.input
    loc, energy = [], []
    for row in x:
        mon.update(row)
        a, b = mon.scores[AlarmKind.INPUT]
        loc.append(a / stat.location_threshold)
        energy.append(b / stat.energy_threshold)
    return {"location": loc, "energy": energy}


def save_plot(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.2))
    ax.plot(data["location"], lw=0.9, label="location score / threshold")
    ax.plot(data["energy"], lw=0.9, label="energy score / threshold")
    ax.axhline(1.0, color="k", lw=0.8, ls="--", label="threshold")
    ax.axvline(SHIFT_AT, color="r", lw=1.0, label="shift (+0.5 std on 16 pixels)")
    for t in data["alarms"]:
        ax.axvline(t, color="g", lw=0.8, ls=":")
    ax.set_xlabel("sample")
    ax.set_ylabel("score / threshold")
    ax.set_title("digits, seed 0: DriftMonitor input scores (green: alarms)")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def fmt_detect(cell: dict[str, Any]) -> str:
    if cell["seeds"] == 0:
        return "n/a"
    delay = "-" if cell["median_delay"] is None else f"{cell['median_delay']:.0f}"
    return f"{cell['detected']}/{cell['seeds']}, {delay}"


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| data set | method | covariate (found, median delay) | scale | prior "
        "| false alarms / 1,000 | µs / sample (p50) | state bytes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for method, row in r["methods"].items():
            us = row["us_per_sample_p50"]
            cells = [fmt_detect(row[k]) for k in KINDS[:3]]
            lines.append(
                f"| {r['dataset']} | {method} | {' | '.join(cells)} | "
                f"{row['false_alarms_per_1000']:.2f} | {'-' if us is None else f'{us:.0f}'} | "
                f"{row['state_bytes'] or '-'} |"
            )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 seeds instead of 10")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--plot", type=Path, default=None, help="PNG of one stream's scores")
    args = parser.parse_args()
    seeds = args.seeds or (2 if args.quick else 10)
    plot: dict[str, Any] | None = {} if args.plot else None
    start = time.perf_counter()
    # One core, as the goal says ("<= 1 ms per update, p50, one core").
    with threadpool_limits(1):
        results = [bench_dataset(n, seeds, plot) for n in args.datasets.split(",")]
    report = {
        "seeds": seeds,
        "machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} CPUs, "
        f"python {platform.python_version()}, numpy {np.__version__}".strip(),
        "seconds": time.perf_counter() - start,
        "results": results,
    }
    print(table(results))
    for r in results:
        print(
            f"{r['dataset']}: profile {r['profile_bytes']} B, fit {r['fit_seconds_median']:.2f} s, "
            f"accuracy-estimate MAE shifted {r['accuracy_estimate_mae_shifted']:.3f}, "
            f"no shift {r['accuracy_estimate_mae_no_shift']:.3f}"
        )
    print(f"{report['machine']}; {report['seconds']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    if args.plot and plot:
        save_plot(plot, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
