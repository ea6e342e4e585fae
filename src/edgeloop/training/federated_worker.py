"""The federated training worker: the only process of a node (or of the control plane) that
imports torch for federated learning.

    python -m edgeloop.training.federated_worker serve --data DATA.npz [--threads 1]
    python -m edgeloop.training.federated_worker init --model NAME --seed S --out W.npy

``serve`` is the agent's persistent worker (:mod:`edgeloop.agent.fl_worker`): it loads the
node's data once, then answers one JSON line on stdin with one JSON line on stdout:

    {"kind": "train"|"evaluate", "model", "weights": PATH (float32), "round", "client_id",
     "local": {"lr", "epochs", "batch_size", "mu"}, "out": PATH,
     "budget": {"cpu_s": S|null, "wall_s": S|null}}
    -> {"num_samples", "metrics": {"loss", "eval_loss", "eval_accuracy", "eval_samples",
        "cpu_s", "samples_seen", "stopped_by_cpu_budget", "stopped_by_deadline"}}

It first scores the received model on the node's held-out share (``x_test``/``y_test``), then
(for ``train``) runs :func:`~edgeloop.training.federated_client.train_local` with the shuffle
seed ``round * 1000 + client_id`` (issue 14's protocol) and writes the new weights (float32) to
``out``. An error is answered as ``{"error", "message"}`` and the worker goes on. It exits
when stdin closes (its agent ended, even by SIGKILL).

The budget (:mod:`edgeloop.agent.fl_policy`; ``wall_s``: the time left before the round's
deadline, less the upload's margin) is checked before every minibatch: once this request's CPU
time (``time.process_time``: the worker's user+sys seconds, all threads) reached ``cpu_s``, or
``wall_s`` passed, training stops after the batches done (at least one), and the answer says
so. ``num_samples`` is then the number of distinct examples the update saw (what FedAvg
weighs it by) and ``loss`` the mean loss of the stopped model on them. ``RLIMIT_CPU`` is set
to twice the budget past what the worker used so far (+5 s), a backstop against one batch
that never ends: the kernel ends the worker, the agent starts another, the round is a dropout.

``init`` writes the seeded initial model (``torch.manual_seed(S)`` then the constructor, as
the reference loop does) and prints one JSON line; the control plane runs it as a process and
never imports torch itself.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeloop.core.errors import DataError, EdgeError
from edgeloop.federated.models import fl_model
from edgeloop.training.federated_client import (
    LocalSGD,
    digits_cnn,
    evaluate,
    get_weights,
    set_weights,
    train_local,
)


def digits_mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


BUILDERS = {"digits-cnn": digits_cnn, "digits-mlp": digits_mlp}


def build(name: str) -> nn.Module:
    """The torch module of the federated model ``name`` (layout as edgeloop.federated.models).

    Raises:
        NotFoundError: unknown model.
    """
    fl_model(name)
    return BUILDERS[name]()


class Node:
    """One node's data and its models, kept between rounds."""

    def __init__(self, data: Path) -> None:
        try:
            with np.load(data) as z:
                self.x = torch.from_numpy(np.asarray(z["x_train"], dtype=np.float32))
                self.y = torch.from_numpy(np.asarray(z["y_train"], dtype=np.int64))
                self.x_test = torch.from_numpy(np.asarray(z["x_test"], dtype=np.float32))
                self.y_test = torch.from_numpy(np.asarray(z["y_test"], dtype=np.int64))
        except (OSError, KeyError, ValueError) as exc:
            raise DataError(
                f"federated data {str(data)!r} is not an .npz with x_train, y_train, x_test, "
                f"y_test: {exc}",
                hint="write it with `edgeloop fleet up --fl-data digits`",
            ) from exc
        self.models: dict[str, nn.Module] = {}

    def warm_up(self) -> None:
        """One tiny local step of every model that fits the data: torch's first forward and
        backward kernels cost seconds on a busy 2-core machine, which would otherwise land in
        round 1 (each round overwrites the weights anyway). train_local steps the parameters
        itself, so no torch.optim (whose first step imports torch._dynamo) is loaded here."""
        for name in BUILDERS:
            if tuple(self.x.shape[1:]) != fl_model(name).input_shape or not len(self.y):
                continue
            model = self.model(name)
            train_local(model, get_weights(model), self.x[:32], self.y[:32], node_id="warm-up",
                        round=0, seed=0, config=LocalSGD())  # fmt: skip
            if len(self.y_test):
                evaluate(model, self.x_test[:32], self.y_test[:32])

    def model(self, name: str) -> nn.Module:
        if name not in self.models:
            module = build(name)
            expected = fl_model(name).input_shape
            if tuple(self.x.shape[1:]) != expected:
                raise DataError(
                    f"this node's samples have shape {tuple(self.x.shape[1:])}; model {name!r} "
                    f"takes {expected}",
                    hint="give the node data that fits the task's model",
                )
            self.models[name] = module
        return self.models[name]

    def answer(self, ask: dict[str, Any]) -> dict[str, Any]:
        model = self.model(str(ask["model"]))
        weights = np.fromfile(ask["weights"], dtype="<f4")
        set_weights(model, weights)
        metrics: dict[str, float] = {"eval_samples": float(len(self.y_test))}
        if len(self.y_test):
            metrics["eval_loss"], metrics["eval_accuracy"] = evaluate(
                model, self.x_test, self.y_test
            )
        if ask["kind"] == "evaluate":
            return {"num_samples": 0, "metrics": metrics}
        budget = ask.get("budget") or {}
        meter = Meter(budget.get("cpu_s"), budget.get("wall_s"))
        round_, client = int(ask["round"]), int(ask["client_id"])
        config = LocalSGD(**ask["local"])
        seed = round_ * 1000 + client
        try:
            update = train_local(
                Budgeted(model, meter), weights, self.x, self.y, node_id=str(client),
                round=round_, seed=seed, config=config,
            )  # fmt: skip
            trained, samples, loss = update.weights, update.num_samples, update.metrics["loss"]
        except BudgetSpentError:  # the model holds the weights after the batches done
            used = _used(len(self.y), meter.seen, seed)
            samples = len(used)
            loss, _ = evaluate(model, self.x[used], self.y[used])
            trained = get_weights(model)
        np.asarray(trained, dtype="<f4").tofile(ask["out"])
        return {"num_samples": samples, "metrics": {**metrics, "loss": loss, **meter.figures()}}


class BudgetSpentError(EdgeError):
    """Raised before a minibatch once the round's budget is spent (caught in ``answer``)."""


class Meter:
    """A request's CPU and wall-clock budget; counts the examples that went through."""

    def __init__(self, cpu_s: float | None, wall_s: float | None) -> None:
        self.cpu_s = None if cpu_s is None else float(cpu_s)
        self.wall_s = None if wall_s is None else float(wall_s)
        self.cpu0, self.wall0 = time.process_time(), time.monotonic()
        self.seen = 0
        self.stopped = ""
        _cpu_backstop(self.cpu_s)

    def check(self, batch: int) -> None:
        """Raises BudgetSpentError when the budget is spent (never before the first batch)."""
        if self.seen and self.cpu_s is not None and self.used() >= self.cpu_s:
            self.stopped = "cpu"
        elif self.seen and self.wall_s is not None and time.monotonic() - self.wall0 >= self.wall_s:
            self.stopped = "deadline"
        if self.stopped:
            raise BudgetSpentError(self.stopped)
        self.seen += batch

    def used(self) -> float:
        return time.process_time() - self.cpu0

    def figures(self) -> dict[str, float]:
        return {
            "cpu_s": self.used(),
            "samples_seen": float(self.seen),
            "stopped_by_cpu_budget": float(self.stopped == "cpu"),
            "stopped_by_deadline": float(self.stopped == "deadline"),
        }


class Budgeted(nn.Module):
    """The model, checking the meter before each minibatch's forward pass (train_local calls
    ``model(x[batch])`` once per minibatch); same parameters, same order."""

    def __init__(self, inner: nn.Module, meter: Meter) -> None:
        super().__init__()
        self.inner = inner
        self.meter = meter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.meter.check(len(x))
        out: torch.Tensor = self.inner(x)
        return out


def _used(n: int, seen: int, seed: int) -> torch.Tensor:
    """The distinct examples among the first ``seen`` train_local drew: its shuffle is
    ``torch.randperm(n, generator=manual_seed(seed))`` per epoch."""
    if seen >= n:
        return torch.arange(n)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return torch.sort(order[:seen]).values


_SOFT_AT_START = resource.getrlimit(resource.RLIMIT_CPU)[0]


def _cpu_backstop(cpu_s: float | None) -> None:
    """RLIMIT_CPU at twice the budget past the CPU used so far (+5 s); without a budget, the
    limit the worker started with."""
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = _SOFT_AT_START
    if cpu_s is not None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        soft = math.ceil(usage.ru_utime + usage.ru_stime + 2 * cpu_s + 5)
        if hard != resource.RLIM_INFINITY:
            soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def serve(data: Path) -> None:
    node = Node(data)
    node.warm_up()
    print(json.dumps({"ready": True, "train": len(node.y), "test": len(node.y_test)}), flush=True)
    for line in sys.stdin:
        try:
            answer = node.answer(json.loads(line))
        except EdgeError as exc:
            answer = exc.to_dict()
        except (OSError, ValueError, KeyError, TypeError) as exc:
            answer = {"error": type(exc).__name__, "message": str(exc)}
        print(json.dumps(answer), flush=True)


def init(name: str, seed: int, out: Path) -> dict[str, Any]:
    torch.manual_seed(seed)
    weights = get_weights(build(name))
    np.save(out, weights)
    return {"model": name, "seed": seed, "params": int(weights.size)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgeloop.training.federated_worker")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--data", type=Path, required=True)
    s.add_argument("--threads", type=int, default=1)
    i = sub.add_parser("init")
    i.add_argument("--model", required=True)
    i.add_argument("--seed", type=int, default=0)
    i.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    torch.set_num_threads(getattr(args, "threads", 1))
    try:
        if args.command == "serve":
            serve(args.data)
            return 0
        result = init(args.model, args.seed, args.out)
    except EdgeError as exc:
        print(json.dumps({**exc.to_dict(), "exit_code": exc.exit_code}), flush=True)
        return exc.exit_code
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
