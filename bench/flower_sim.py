"""Issue 14's protocol in Flower's Ray simulation; run by bench/fl_flower_bench.py.

    .venv-flower/bin/python bench/flower_sim.py DATA.npz --partition iid|noniid [--dp]
    PYTHONPATH=src .venv-flower/bin/python bench/flower_sim.py --noise-check

Runs in Flower's own environment (``.venv-flower``: flwr[simulation] and torch 2.13.0+cpu, no
edgeloop install). The data and the client shares come from the caller as one .npz (x_train,
y_train, x_test, y_test, ``part_<partition>_<k>`` index arrays), so both sides train on the same
bytes. Each client runs edgeloop's ``train_local`` (src/ on PYTHONPATH: the same local SGD and
the same ``round*1000 + client_id`` shuffle as the plain loop), so what differs is Flower's
orchestration and aggregation: ``flwr.server.strategy.FedAvg`` (weighted by examples), wrapped in
``DifferentialPrivacyServerSideFixedClipping`` (noise multiplier 1.0, clip 1.0, 10 clients) with
``--dp``. Accuracy on the 360 test images after every round through Flower's ``evaluate_fn``; the
seconds between two evaluations are that round's time. Prints one JSON object on stdout.

``--noise-check`` runs no simulation: the same 10 client models (9,930 weights, digits-cnn's count;
global ~ N(0, 0.1), each client + N(0, 0.05), so every change is clipped) go through Flower's
server-side DP (``compute_clip_model_update``, FedAvg's weighted ``aggregate``,
``add_gaussian_noise_to_params``, 200 draws) and edgeloop's ``private_mean_delta`` (z = 1, C = 1,
m = 10, noise seeds 0..199); it prints the clean mean change of each and the measured std of the
noise each adds to it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

CLIENTS, ROUNDS = 10, 20
_CACHE: dict[str, Any] = {}


def _data(path: str) -> Any:
    if path not in _CACHE:
        _CACHE[path] = dict(np.load(path))
    return _CACHE[path]


def _split(model: torch.nn.Module, flat: np.ndarray) -> list[np.ndarray]:
    out, start = [], 0
    for p in model.parameters():
        out.append(flat[start : start + p.numel()].astype(np.float32).reshape(tuple(p.shape)))
        start += p.numel()
    return out


def noise_check() -> dict[str, Any]:
    from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server.strategy.aggregate import aggregate
    from flwr.supercore.differential_privacy import (
        add_gaussian_noise_to_params,
        compute_clip_model_update,
    )

    from edgeloop.federated.dp import DpConfig, private_mean_delta
    from edgeloop.federated.update import ClientUpdate

    rng = np.random.default_rng(1)
    glob = rng.normal(0, 0.1, 9930)
    models = [glob + rng.normal(0, 0.05, glob.size) for _ in range(CLIENTS)]
    samples = [144] * 7 + [143] * 3  # the IID shares of 1,437 images
    results = []
    for m, n in zip(models, samples, strict=True):
        arrays = [m.astype(np.float32)]
        compute_clip_model_update(arrays, [glob.astype(np.float32)], 1.0)
        results.append((arrays, n))
    clean_f = aggregate(results)[0].astype(np.float64) - glob
    noise_f = [parameters_to_ndarrays(add_gaussian_noise_to_params(
        ndarrays_to_parameters(aggregate(results)), 1.0, 1.0, CLIENTS))[0] - glob - clean_f
        for _ in range(200)]  # fmt: skip
    pairs = enumerate(zip(models, samples, strict=True))
    ups = [ClientUpdate(str(k), 1, n, m) for k, (m, n) in pairs]
    cfg = DpConfig(1.0, 1.0, expected_clients=CLIENTS)
    clean_e = private_mean_delta(glob, ups, DpConfig(0.0, 1.0, CLIENTS), np.random.default_rng(0))
    noise_e = [private_mean_delta(glob, ups, cfg, np.random.default_rng(s)) - clean_e
               for s in range(200)]  # fmt: skip
    return {
        "flower_noise_std": float(np.concatenate(noise_f).std()),
        "edgeloop_noise_std": float(np.concatenate(noise_e).std()),
        "formula_z_c_over_m": cfg.noise_std(CLIENTS), "draws_each": 200 * glob.size,
        "clean_mean_change_norm": {"flower": float(np.linalg.norm(clean_f)),
                                   "edgeloop": float(np.linalg.norm(clean_e))},
        "clean_max_abs_diff": float(np.abs(clean_f - clean_e).max()),
        "noise_norm_per_round": float(np.linalg.norm(noise_e[0])),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?")
    parser.add_argument("--partition", choices=["iid", "noniid"], default="iid")
    parser.add_argument("--dp", action="store_true")
    parser.add_argument("--noise-check", action="store_true", help="the DP noise, both sides")
    args = parser.parse_args()
    if args.noise_check:
        print(json.dumps(noise_check(), indent=2))
        return
    if args.data is None:
        parser.error("DATA.npz is needed unless --noise-check")
    import flwr
    from flwr.client import NumPyClient
    from flwr.common import Context, ndarrays_to_parameters
    from flwr.server import ServerConfig
    from flwr.server.strategy import DifferentialPrivacyServerSideFixedClipping, FedAvg
    from flwr.simulation import start_simulation

    from edgeloop.training.federated_client import LocalSGD, digits_cnn, evaluate, train_local

    torch.set_num_threads(1)
    path, partition = str(Path(args.data).resolve()), args.partition

    class Client(NumPyClient):  # type: ignore[misc]
        def __init__(self, cid: int) -> None:
            self.cid = cid

        def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> Any:
            torch.set_num_threads(1)
            d = _data(path)
            idx = d[f"part_{partition}_{self.cid}"]
            x, y = torch.from_numpy(d["x_train"][idx]), torch.from_numpy(d["y_train"][idx])
            model = digits_cnn()
            flat = np.concatenate([p.reshape(-1) for p in parameters]).astype(np.float64)
            rnd = int(config["round"])
            update = train_local(
                model, flat, x, y, node_id=str(self.cid), round=rnd,
                seed=rnd * 1000 + self.cid, config=LocalSGD(0.05, 1, 32),
            )  # fmt: skip
            return _split(model, update.weights), update.num_samples, {}

    def client_fn(context: Context) -> Any:
        return Client(int(context.node_config["partition-id"])).to_client()

    d = _data(path)
    x_test, y_test = torch.from_numpy(d["x_test"]), torch.from_numpy(d["y_test"])
    torch.manual_seed(0)
    model = digits_cnn()
    init = [p.detach().numpy().copy() for p in model.parameters()]
    stamps: list[float] = []
    accuracy: list[float] = []

    def evaluate_fn(rnd: int, parameters: list[np.ndarray], config: dict[str, Any]) -> Any:
        flat = np.concatenate([p.reshape(-1) for p in parameters])
        with torch.no_grad():
            start = 0
            for p in model.parameters():
                p.copy_(torch.from_numpy(flat[start : start + p.numel()].astype(np.float32))
                        .view_as(p))  # fmt: skip
                start += p.numel()
        loss, acc = evaluate(model, x_test, y_test)
        stamps.append(time.perf_counter())
        if rnd > 0:
            accuracy.append(acc)
        return loss, {"accuracy": acc}

    strategy: Any = FedAvg(
        fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=CLIENTS,
        min_available_clients=CLIENTS, evaluate_fn=evaluate_fn,
        on_fit_config_fn=lambda rnd: {"round": rnd},
        initial_parameters=ndarrays_to_parameters(init),
    )  # fmt: skip
    if args.dp:
        strategy = DifferentialPrivacyServerSideFixedClipping(
            strategy, noise_multiplier=1.0, clipping_norm=1.0, num_sampled_clients=CLIENTS
        )
    t0 = time.perf_counter()
    start_simulation(
        client_fn=client_fn, num_clients=CLIENTS, config=ServerConfig(num_rounds=ROUNDS),
        strategy=strategy, client_resources={"num_cpus": 1, "num_gpus": 0.0},
        ray_init_args={"include_dashboard": False, "ignore_reinit_error": True},
    )  # fmt: skip
    end = time.perf_counter()
    round_s = [b - a for a, b in itertools.pairwise(stamps)]
    print(json.dumps({
        "flwr": flwr.__version__, "torch": torch.__version__, "python": sys.version.split()[0],
        "partition": partition, "dp": args.dp, "accuracy_per_round": accuracy,
        "round_s": round_s, "simulation_s": end - t0,
        "first_round_start_after_s": stamps[0] - t0 if stamps else None,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
