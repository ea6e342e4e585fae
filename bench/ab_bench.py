"""Error rates of the fleet A/B statistics (edgeloop.experiments), by simulation.

Issue 15 part 2's goals, at the unit level (no servers): Bernoulli arms (accuracy), looked at
after every batch of 50 samples per arm, all runs vectorised with numpy, seeded.

1. A/A: both arms at 90 %, up to 5,000 and 20,000 samples per arm (100 and 400 looks). The
   mSPRT's false positive rate (its always-valid p-value <= alpha at any look) with a 95 %
   Wilson interval, beside a fixed-horizon z-test peeked at after every batch and the same
   z-test read once at the end.
2. 90 % vs 92 % (2 pp): the fixed-horizon sample size per arm for 80 % power at alpha 5 %
   (Fleiss' formula, and its simulated power), and for each tau the mSPRT's mean / median
   samples per arm to a decision, its power (share promoting the treatment) and error rate
   (share keeping the control) at the shortest horizon giving >= 80 % power, and at a horizon
   of twice the fixed one; for the normal mixture and the two-point one (sequential.py).
3. Larger true effects (91 % ... 96 %) with the same 2 pp design: where sequential tests gain.
4. Coverage: share of runs whose confidence sequence holds the true difference at every look,
   for each mixing's own sequence (the two-point one inverts the two-point test).
5. A/A on lognormal latencies (mean latency, continuous summaries), and an error-rate guardrail
   (margin 1 pp): how often it trips when the treatment is as good, at the margin, or worse.

    .venv/bin/python bench/ab_bench.py                  # 4,000 runs per setting (seconds)
    .venv/bin/python bench/ab_bench.py --runs 500 --json out.json --markdown
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edgeloop.experiments import (
    Mixing,
    cs_half_width,
    mixture_log_lr,
    p_value_path,
    sample_size_per_arm,
    z_critical,
    z_statistic,
)
from edgeloop.experiments.arms import bernoulli_variance

BATCH = 50
ALPHA = 0.05
POWER = 0.80
P_CONTROL, P_TREATMENT = 0.90, 0.92
AA_HORIZONS = (5_000, 20_000)
TAU_FACTORS = {
    Mixing.NORMAL: (0.25, 0.5, 1.0, 1.25, 1.5, 2.0, 3.0),
    Mixing.TWO_POINT: (0.75, 1.0, 1.25, 1.5),
}
DEFAULT_FACTOR = {Mixing.NORMAL: 1.25, Mixing.TWO_POINT: 1.0}
SWEEP = (0.91, 0.92, 0.93, 0.94, 0.96)
LATENCY_MIN_EFFECT_MS = 1.0
GUARDRAIL_CONTROL, GUARDRAIL_MARGIN = 0.02, 0.01
GUARDRAIL_TREATMENTS = (0.02, 0.03, 0.04, 0.06)

Array = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Paths:
    """Cumulative counts of R simulated experiments at each look (R x looks)."""

    n: Array  # samples per arm at each look (looks,)
    s_c: Array
    s_t: Array

    @property
    def effect(self) -> Array:
        return np.asarray((self.s_t - self.s_c) / self.n)

    @property
    def var(self) -> Array:
        """v = var_t / n + var_c / n with the plug-in Bernoulli variances the library uses."""
        return np.asarray(
            (bernoulli_variance(self.s_t, self.n) + bernoulli_variance(self.s_c, self.n)) / self.n
        )


def simulate(rng: np.random.Generator, runs: int, looks: int, p_c: float, p_t: float) -> Paths:
    n = BATCH * np.arange(1, looks + 1, dtype=np.float64)
    s_c = rng.binomial(BATCH, p_c, (runs, looks)).cumsum(axis=1).astype(np.float64)
    s_t = rng.binomial(BATCH, p_t, (runs, looks)).cumsum(axis=1).astype(np.float64)
    return Paths(n, s_c, s_t)


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson's 95 % score interval for a binomial proportion k / n."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def first_crossing(paths: Paths, tau: float, mixing: Mixing) -> Array:
    """Look index (0-based) at which the always-valid p-value first reaches alpha; inf if never."""
    p = p_value_path(mixture_log_lr(paths.effect, paths.var, tau, mixing=mixing), axis=1)
    hit = p <= ALPHA
    return np.where(hit.any(axis=1), hit.argmax(axis=1).astype(np.float64), np.inf)


def rate(k: int, n: int) -> dict[str, float]:
    low, high = wilson(k, n)
    return {"rate": k / n, "ci95_low": low, "ci95_high": high, "count": k, "runs": n}


def aa_experiment(rng: np.random.Generator, runs: int, horizon: int) -> dict[str, object]:
    paths = simulate(rng, runs, horizon // BATCH, P_CONTROL, P_CONTROL)
    min_effect = P_TREATMENT - P_CONTROL
    msprt = {
        str(mixing): rate(
            int(np.isfinite(first_crossing(paths, factor * min_effect, mixing)).sum()), runs
        )
        for mixing, factor in DEFAULT_FACTOR.items()
    }
    z = np.abs(z_statistic(paths.s_c, paths.n, paths.s_t, paths.n))
    peeked = int((z > z_critical(ALPHA)).any(axis=1).sum())
    once = int((z[:, -1] > z_critical(ALPHA)).sum())
    return {
        "p": P_CONTROL,
        "horizon_per_arm": horizon,
        "looks": horizon // BATCH,
        "tau_per_min_effect": {str(m): f for m, f in DEFAULT_FACTOR.items()},
        "msprt_peeked": msprt,
        "z_test_peeked": rate(peeked, runs),
        "z_test_once_at_horizon": rate(once, runs),
    }


def fixed_power(rng: np.random.Generator, runs: int, n: int, p_t: float = P_TREATMENT) -> float:
    s_c = rng.binomial(n, P_CONTROL, runs)
    s_t = rng.binomial(n, p_t, runs)
    return float((z_statistic(s_c, n, s_t, n) > z_critical(ALPHA)).mean())


def at_horizon(cross: Array, right: npt.NDArray[np.bool_], looks: int) -> dict[str, float]:
    """Decisions when the experiment is cut at ``looks`` looks (inconclusive after that)."""
    stopped = cross < looks
    samples = BATCH * (np.minimum(cross, looks - 1) + 1)
    return {
        "horizon_per_arm": BATCH * looks,
        "power": float((stopped & right).mean()),
        "error_rate": float((stopped & ~right).mean()),
        "inconclusive": float((~stopped).mean()),
        "mean_samples_per_arm": float(samples.mean()),
        "median_samples_per_arm": float(np.median(samples)),
        "mean_samples_when_promoting": float(samples[stopped & right].mean()),
    }


def power_experiment(rng: np.random.Generator, runs: int, n_fixed: int) -> list[dict[str, object]]:
    looks = 4 * n_fixed // BATCH
    paths = simulate(rng, runs, looks, P_CONTROL, P_TREATMENT)
    effect = paths.effect
    rows: list[dict[str, object]] = []
    for mixing, factor in ((m, f) for m, fs in TAU_FACTORS.items() for f in fs):
        tau = factor * (P_TREATMENT - P_CONTROL)
        cross = first_crossing(paths, tau, mixing)
        idx = np.minimum(cross, looks - 1).astype(np.int64)
        right = effect[np.arange(runs), idx] > 0
        powers = [float((cross[right] < k).sum()) / runs for k in range(1, looks + 1)]
        k80 = next((k for k, p in enumerate(powers, 1) if p >= POWER), looks)
        twice = min(looks, 2 * math.ceil(n_fixed / BATCH))
        rows.append(
            {
                "mixing": str(mixing),
                "tau_per_min_effect": factor,
                "tau": tau,
                "at_80_percent_power": at_horizon(cross, right, k80),
                "at_twice_fixed_horizon": at_horizon(cross, right, twice),
            }
        )
    return rows


def effect_sweep(rng: np.random.Generator, runs: int, n_fixed: int) -> list[dict[str, object]]:
    """Larger true effects, same design (2 pp minimum effect, horizon twice the fixed one)."""
    looks = 2 * math.ceil(n_fixed / BATCH)
    rows: list[dict[str, object]] = []
    for p_t in SWEEP:
        paths = simulate(rng, runs, looks, P_CONTROL, p_t)
        row: dict[str, object] = {
            "p_treatment": p_t,
            "fixed_power_at_n": fixed_power(rng, runs, n_fixed, p_t),
        }
        for mixing, factor in DEFAULT_FACTOR.items():
            cross = first_crossing(paths, factor * (P_TREATMENT - P_CONTROL), mixing)
            idx = np.minimum(cross, looks - 1).astype(np.int64)
            right = paths.effect[np.arange(runs), idx] > 0
            row[str(mixing)] = at_horizon(cross, right, looks)
        rows.append(row)
    return rows


def coverage(rng: np.random.Generator, runs: int, n_fixed: int) -> dict[str, object]:
    """Share of runs whose confidence sequence (running intersection) holds the true difference
    at every look, for each mixing at its default tau, on the same simulated paths (so adding a
    mixing here draws nothing more from ``rng``); with the median half-width at the last look."""
    looks = 2 * n_fixed // BATCH
    paths = simulate(rng, runs, looks, P_CONTROL, P_TREATMENT)
    truth = P_TREATMENT - P_CONTROL
    result: dict[str, object] = {"looks": looks}
    for mixing, factor in DEFAULT_FACTOR.items():
        tau = factor * truth
        half = cs_half_width(paths.var, tau, ALPHA, mixing)
        low = np.maximum.accumulate(paths.effect - half, axis=1)
        high = np.minimum.accumulate(paths.effect + half, axis=1)
        held = int(((low <= truth) & (truth <= high)).all(axis=1).sum())
        result[str(mixing)] = {
            "tau": tau,
            "covered_at_every_look": rate(held, runs),
            "median_half_width_at_last_look": float(np.median(half[:, -1])),
        }
    return result


def latency_aa(rng: np.random.Generator, runs: int) -> dict[str, object]:
    """A/A on a skewed continuous metric: lognormal latencies (median 20 ms, sigma 0.5, mean
    22.7 ms, sd 12.1 ms), mean latency tested with the per-arm sample variances M2 / (n - 1)."""
    looks = AA_HORIZONS[0] // BATCH
    sums = np.zeros((4, runs))
    effect, var = np.empty((runs, looks)), np.empty((runs, looks))
    for k in range(looks):
        x = rng.lognormal(math.log(20.0), 0.5, (2, runs, BATCH))
        sums += np.concatenate([x.sum(axis=2), (x * x).sum(axis=2)])
        n = BATCH * (k + 1)
        means = sums[:2] / n
        variances = (sums[2:] - n * means**2) / (n - 1)
        effect[:, k] = means[1] - means[0]
        var[:, k] = variances.sum(axis=0) / n
    tau = DEFAULT_FACTOR[Mixing.NORMAL] * LATENCY_MIN_EFFECT_MS
    p = p_value_path(mixture_log_lr(effect, var, tau), axis=1)
    hits = int((p <= ALPHA).any(axis=1).sum())
    return {
        "looks": looks,
        "min_effect_ms": LATENCY_MIN_EFFECT_MS,
        "msprt_peeked": rate(hits, runs),
    }


def guardrail(rng: np.random.Generator, runs: int) -> list[dict[str, object]]:
    """An error-rate guardrail (margin 1 pp, control 2 %): how often and how soon it trips."""
    looks = AA_HORIZONS[0] // BATCH
    tau = DEFAULT_FACTOR[Mixing.NORMAL] * (P_TREATMENT - P_CONTROL)  # the primary's tau
    rows: list[dict[str, object]] = []
    for p_t in GUARDRAIL_TREATMENTS:
        paths = simulate(rng, runs, looks, GUARDRAIL_CONTROL, p_t)
        low = np.maximum.accumulate(paths.effect - cs_half_width(paths.var, tau, ALPHA), axis=1)
        tripped = low > GUARDRAIL_MARGIN
        ever = tripped.any(axis=1)
        when = BATCH * (tripped.argmax(axis=1)[ever] + 1)
        rows.append(
            {
                "treatment_error_rate": p_t,
                "tripped": rate(int(ever.sum()), runs),
                "mean_samples_to_trip": float(when.mean()) if when.size else None,
            }
        )
    return rows


def _pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def _interval(r: dict[str, float]) -> str:
    return f"{_pct(r['rate'])} [{_pct(r['ci95_low'])}, {_pct(r['ci95_high'])}]"


def markdown(result: dict[str, Any]) -> str:
    """The tables of docs/experiments.md, from one run's results."""
    lines = ["| A/A, read after every batch of 50 | horizon/arm (looks) | FPR [95 % Wilson] |"]
    lines.append("|---|---|---|")
    for aa in result["aa"]:
        where = f"{aa['horizon_per_arm']} ({aa['looks']})"
        for mixing, r in aa["msprt_peeked"].items():
            lines.append(f"| mSPRT, {mixing} mixing | {where} | {_interval(r)} |")
        for key, name in (("z_test_peeked", "peeked"), ("z_test_once_at_horizon", "read once")):
            lines.append(f"| fixed z-test, {name} | {where} | {_interval(aa[key])} |")
    lines += [
        "",
        "| mixing | tau / min effect | horizon for 80 % power | power | wrong answer "
        "| mean n/arm | median n/arm | mean n/arm when promoting |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in result["sequential"]:
        a = row["at_80_percent_power"]
        lines.append(
            f"| {row['mixing']} | {row['tau_per_min_effect']} | {a['horizon_per_arm']} "
            f"| {_pct(a['power'])} | {_pct(a['error_rate'])} | {a['mean_samples_per_arm']:.0f} "
            f"| {a['median_samples_per_arm']:.0f} | {a['mean_samples_when_promoting']:.0f} |"
        )
    lines += [
        "",
        "| treatment | fixed test power at its n | normal: power / mean n "
        "| two-point: power / mean n |",
        "|---|---|---|---|",
    ]
    for row in result["effect_sweep"]:
        cells = [f"{_pct(row[m]['power'])} / {row[m]['mean_samples_per_arm']:.0f}" for m in Mixing]
        lines.append(
            f"| {_pct(row['p_treatment'])} | {_pct(row['fixed_power_at_n'])} | "
            + " | ".join(cells)
            + " |"
        )
    cov = result["coverage"]
    lines += [
        "",
        f"| confidence sequence ({cov['looks']} looks) | tau | held the truth at every "
        "look [95 % Wilson] | median half-width at the last look |",
        "|---|---|---|---|",
    ]
    for mixing in Mixing:
        c = cov[str(mixing)]
        lines.append(
            f"| {mixing} | {c['tau']:.4g} | {_interval(c['covered_at_every_look'])} "
            f"| {100 * c['median_half_width_at_last_look']:.2f} pp |"
        )
    lat = result["latency_aa"]
    lines += [
        "",
        f"Latency A/A (lognormal, {lat['looks']} looks): FPR {_interval(lat['msprt_peeked'])}",
        "",
        "| treatment error rate (control 2 %, margin 1 pp) | tripped [95 % Wilson] "
        "| mean n/arm to trip |",
        "|---|---|---|",
    ]
    for row in result["guardrail"]:
        when = row["mean_samples_to_trip"]
        lines.append(
            f"| {_pct(row['treatment_error_rate'])} | {_interval(row['tripped'])} "
            f"| {'n/a' if when is None else f'{when:.0f}'} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--json", help="write the results to this file")
    parser.add_argument("--markdown", action="store_true", help="print the docs' tables too")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    n_fixed = sample_size_per_arm(P_CONTROL, P_TREATMENT, ALPHA, POWER)
    result = {
        "runs": args.runs,
        "seed": args.seed,
        "batch_per_arm": BATCH,
        "alpha": ALPHA,
        "aa": [aa_experiment(rng, args.runs, horizon) for horizon in AA_HORIZONS],
        "fixed_horizon": {
            "n_per_arm": n_fixed,
            "simulated_power": fixed_power(rng, args.runs, n_fixed),
        },
        "sequential": power_experiment(rng, args.runs, n_fixed),
        "effect_sweep": effect_sweep(rng, args.runs, n_fixed),
        "coverage": coverage(rng, args.runs, n_fixed),
        "latency_aa": latency_aa(rng, args.runs),
        "guardrail": guardrail(rng, args.runs),
    }
    result["seconds"] = round(time.perf_counter() - start, 2)
    text = json.dumps(result, indent=2)
    print(text)
    if args.markdown:
        print(markdown(result))
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
