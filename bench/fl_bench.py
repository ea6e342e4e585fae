"""Federated learning benchmark, the in-process reference loop of issue 14's protocol.

    .venv/bin/python bench/fl_bench.py            # plain IID + non-IID, SecAgg, DP side by side
    .venv/bin/python bench/fl_bench.py --plain    # only the plain FedAvg loops
    .venv/bin/python bench/fl_bench.py --format json

Protocol (issue 14 "Performance", as written): sklearn digits, pixels/16, float32;
train_test_split(test_size=0.2, random_state=42, stratify=y) -> 1,437 train / 360 test; 10
clients, IID (default_rng(42).permutation then array_split) or non-IID (per class, proportions
~ Dirichlet(0.5), seed 42); Conv2d(1,16,3)-ReLU-Conv2d(16,32,3)-ReLU-Flatten-Linear(512,10),
torch.manual_seed(0); local SGD lr 0.05, 1 epoch, batch 32, shuffle seeded round*1000+client_id;
one torch thread; FedAvg weighted by examples (edgeloop.federated.FedAvg); 20 rounds, all 10
clients; accuracy on the 360 test images after every round.

Variants in the same process, all from the same initial model:
- ``secagg``: the updates go through edgeloop.federated.secagg (10 clients, threshold 6, clients
  3, 6 and 9 drop after sending their masked input); the unmasked FedAvg is compared with the
  plain FedAvg of the same updates every round, against the fixed-point error bound.
- ``dp``: DP-FedAvg (noise multiplier 1.0, clip 1.0, 10 clients per round of 10, noise seeded
  with 0), epsilon at delta = 1e-5 from dp-accounting after every round.
Everything runs in one process, clients one after another: no HTTP, no agents.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from edgeloop.federated import (  # noqa: E402
    FedAvg,
    Participation,
    ServerState,
    UpdateLimits,
    close_round,
)
from edgeloop.federated.accountant import PrivacyAccountant  # noqa: E402
from edgeloop.federated.convergence import RoundRecord, record_round  # noqa: E402
from edgeloop.federated.dp import DpConfig, DpFedAvg  # noqa: E402
from edgeloop.federated.secagg import (  # noqa: E402
    FixedPoint,
    fedavg_from_sum,
    run_round,
    weighted_input,
)
from edgeloop.training.federated_client import (  # noqa: E402
    LocalSGD,
    digits_cnn,
    evaluate,
    get_weights,
    set_weights,
    train_local,
)

CLIENTS, ROUNDS, THRESHOLD, DROP_AFTER_MASKING = 10, 20, 6, (3, 6, 9)
ANCHORS = {"iid": (0.5694, 0.7194, 0.8833), "noniid": (0.4389, 0.5333, 0.8889)}
FP = FixedPoint(frac_bits=24)


@dataclass
class Data:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def load() -> Data:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    y = digits.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.2, random_state=42, stratify=y)
    t = torch.from_numpy
    return Data(t(xtr), t(ytr), t(xte), t(yte))


def iid_parts(n: int) -> list[np.ndarray]:
    return list(np.array_split(np.random.default_rng(42).permutation(n), CLIENTS))


def dirichlet_parts(y: np.ndarray, alpha: float = 0.5) -> list[np.ndarray]:
    """Per class, split its (shuffled) indices across clients in Dirichlet(alpha) proportions."""
    rng = np.random.default_rng(42)
    parts: list[list[int]] = [[] for _ in range(CLIENTS)]
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        share = rng.dirichlet([alpha] * CLIENTS)
        cuts = (np.cumsum(share) * len(idx)).astype(int)[:-1]
        for k, chunk in enumerate(np.split(idx, cuts)):
            parts[k].extend(int(i) for i in chunk)
    return [np.sort(np.array(p, dtype=np.int64)) for p in parts]


@dataclass
class Run:
    name: str
    partition: str
    records: list[RoundRecord] = field(default_factory=list)
    round_s: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def accuracy(self, rnd: int) -> float:
        acc = self.records[rnd - 1].global_accuracy
        return float("nan") if acc is None else acc


def federate(
    data: Data, parts: list[np.ndarray], name: str, partition: str, dp_seed: int = 0
) -> Run:
    torch.manual_seed(0)
    model = digits_cnn()
    weights = get_weights(model)
    config = LocalSGD(lr=0.05, epochs=1, batch_size=32)
    run = Run(name, partition)
    dp = DpFedAvg(DpConfig(1.0, 1.0, expected_clients=CLIENTS), dp_seed) if name == "dp" else None
    accountant = PrivacyAccountant.for_fleet(1.0, CLIENTS, CLIENTS, delta=1e-5)
    state = ServerState()
    secagg_s, worst_diff, bound = [], 0.0, 0.0
    for rnd in range(1, ROUNDS + 1):
        start = time.perf_counter()
        updates = [
            train_local(
                model, weights, data.x_train[p], data.y_train[p],
                node_id=str(c), round=rnd, seed=rnd * 1000 + c, config=config,
            )
            for c, p in enumerate(parts)
        ]  # fmt: skip
        limits = UpdateLimits(rnd, weights.size, max_bytes=weights.nbytes)
        out = close_round(
            round=rnd, strategy=dp or FedAvg(), global_weights=weights, state=state,
            selected=[u.node_id for u in updates], updates=updates, limits=limits,
            participation=Participation(min_clients=CLIENTS, min_available=CLIENTS),
        )  # fmt: skip
        if out.aggregate is None:
            raise SystemExit(f"round {rnd} failed: {out.reason}")
        new, state = out.aggregate.weights, out.aggregate.state
        if name == "secagg":
            t0 = time.perf_counter()
            inputs = {
                i + 1: weighted_input(u.weights, u.num_samples, FP, CLIENTS)
                for i, u in enumerate(updates)
            }
            total, _ = run_round(inputs, THRESHOLD, drop_after_masking=DROP_AFTER_MASKING)
            secure, samples = fedavg_from_sum(total, FP)
            secagg_s.append(time.perf_counter() - t0)
            bound = FP.error_bound(CLIENTS) / samples
            worst_diff = max(worst_diff, float(np.abs(secure - new).max()))
            new = secure  # the secure run continues from what SecAgg unmasked
        previous, weights = weights, new
        set_weights(model, weights)
        loss, acc = evaluate(model, data.x_test, data.y_test)
        eps = accountant.epsilon(rnd) if name == "dp" else None
        run.round_s.append(time.perf_counter() - start)
        run.records.append(
            record_round(rnd, previous, weights, updates,
                         global_loss=loss, global_accuracy=acc, epsilon=eps)
        )  # fmt: skip
    if name == "secagg":
        run.extra = {
            "threshold": THRESHOLD,
            "dropped_after_masking": list(DROP_AFTER_MASKING),
            "secagg_s_per_round_median": statistics.median(secagg_s[1:]),
            "max_abs_weight_diff_vs_plain_fedavg": worst_diff,
            "encoding_error_bound_on_weights": bound,
        }
    if name == "dp":
        run.extra = {"noise_multiplier": 1.0, "clip_norm": 1.0, "delta": 1e-5,
                     "sampling_rate": 1.0, "noise_seed": dp_seed,
                     "epsilon": run.records[-1].epsilon}  # fmt: skip
    return run


def summary(run: Run) -> dict[str, Any]:
    return {
        "run": run.name,
        "partition": run.partition,
        "accuracy": {str(r): round(run.accuracy(r), 4) for r in (5, 10, 20)},
        "accuracy_per_round": [round(run.accuracy(r), 4) for r in range(1, ROUNDS + 1)],
        "round_s_median_2_20": statistics.median(run.round_s[1:]),
        "total_s": sum(run.round_s),
        "final_global_loss": run.records[-1].global_loss,
        "final_client_divergence": run.records[-1].divergence,
        "final_update_norm": run.records[-1].update_norm,
        **run.extra,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plain", action="store_true", help="only the plain FedAvg loops")
    parser.add_argument("--format", choices=["text", "json"], default="text")
    parser.add_argument("--dp-seeds", type=int, default=1, help="DP runs with noise seeds 0..N-1")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load()
    if (len(data.x_train), len(data.x_test)) != (1437, 360):
        raise SystemExit(f"expected 1437/360 digits, got {len(data.x_train)}/{len(data.x_test)}")
    iid = iid_parts(len(data.x_train))
    noniid = dirichlet_parts(data.y_train.numpy())
    plan = [("plain", iid, "iid"), ("plain", noniid, "noniid")]
    if not args.plain:
        plan += [("secagg", iid, "iid")]
        plan += [("dp", iid, "iid")] * args.dp_seeds
    runs, seeds = [], iter(range(len(plan)))
    for name, parts, partition in plan:
        seed = next(seeds) if name == "dp" else 0
        runs.append(federate(data, parts, name, partition, dp_seed=seed))
    result: dict[str, Any] = {
        "command": " ".join(["bench/fl_bench.py", *sys.argv[1:]]),
        "machine": {"cpu": platform.processor() or platform.machine(), "torch_threads": 1,
                    "python": platform.python_version(), "torch": torch.__version__},
        "anchors": ANCHORS,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "non_iid_client_sizes": [len(p) for p in noniid],
        "runs": [summary(r) for r in runs],
    }  # fmt: skip
    if args.format == "json":
        print(json.dumps(result, indent=2))
        return
    head = ("run", "part", "acc@5", "acc@10", "acc@20", "s/round", "total")
    print("{:8} {:7} {:>7} {:>7} {:>7} {:>8} {:>6}".format(*head))
    for s in result["runs"]:
        a = s["accuracy"]
        anchor = ANCHORS[s["partition"]] if s["run"] == "plain" else None
        note = "   anchor {:.4f} / {:.4f} / {:.4f}".format(*anchor) if anchor else ""
        print(
            f"{s['run']:8} {s['partition']:7} {a['5']:7.4f} {a['10']:7.4f} {a['20']:7.4f} "
            f"{s['round_s_median_2_20']:8.3f} {s['total_s']:6.2f}{note}"
        )
        for key in ("secagg_s_per_round_median", "max_abs_weight_diff_vs_plain_fedavg",
                    "encoding_error_bound_on_weights", "noise_seed", "epsilon"):  # fmt: skip
            if key in s:
                print(f"    {key} = {s[key]:.4g}")
    print(
        f"peak RSS {result['peak_rss_mb']:.0f} MB; non-IID sizes {result['non_iid_client_sizes']}"
    )


if __name__ == "__main__":
    main()
