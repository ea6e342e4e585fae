"""The federated stage: a few FedAvg rounds across the quickstart fleet's three agents.

It runs on the fleet the fleet stage left running. That stage started each agent with its own
share of the quickstart's data set (:func:`fleet_share`: ``fleet up --fl-data digits --partition
iid``, issue 14's split), so each agent's federated worker (its own torch process) polls the
control plane for rounds. The stage starts a federated task through the control plane's FL API
(the same call as ``edgeloop fl start``), waits until it ends and its final model is registered
in the control plane's registry, and reads every round's figures from the task's status
document: the global model's accuracy on the held-out set (the agents' test shares together,
each scoring the model it received, weighted by test samples), the clients that answered, the
round's time on the control plane's clock, the bytes up and down. Nothing is computed here: every
figure was measured by an agent or the control plane in this run.
:mod:`edgeloop.pipeline.federated_stage_report` draws the curve and the report's section.
"""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeloop.pipeline.stage import Skipped

if TYPE_CHECKING:
    from edgeloop.sdk.fl_data import FlData
    from edgeloop.sdk.local_fleet import LocalFleet

# Issue 14's protocol (docs/federated.md): the CNN from torch.manual_seed(0), FedAvg over every
# agent, local SGD lr 0.05 / 1 epoch / batch 32. Five rounds: the curve's shape, in seconds.
MODEL = "digits-cnn"
ROUNDS = 5
STRATEGY = "fedavg"
LOCAL = {"lr": 0.05, "epochs": 1, "batch_size": 32}
PARTITION, SHARE_SEED = "iid", 42
FL_DATASETS = ("digits",)  # what the federated models (federated/models.py) take: 8x8 digits
DEADLINE_S = 60.0  # a round waits this long for a slow agent, then closes with those that answered
WORKERS_TIMEOUT_S = 120.0  # for every agent's worker to poll (torch's import and warm-up)
TASK_TIMEOUT_S = 300.0
SHARE_FILE = Path("agent") / "fl" / "data.npz"  # under an agent's home (sdk/fl_data.py)


@dataclass(frozen=True)
class FederatedStageResult:
    """What the stage read; ``to_dict()`` is the report's ``federated`` block."""

    body: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"federated": self.body}


def cannot_train(dataset: str) -> str | None:
    """Why the quickstart's agents cannot take federated rounds here; None when they can.

    The agents run this interpreter (sdk/local_fleet.py), so what is importable here is what
    their workers can import.
    """
    if dataset not in FL_DATASETS:
        return (f"the federated models take {', '.join(FL_DATASETS)}; the quickstart runs on "
                f"{dataset!r}")  # fmt: skip
    missing = [m for m in ("torch", "sklearn") if importlib.util.find_spec(m) is None]
    if missing:
        return (f"not installed for the agents' Python: {', '.join(missing)}, so no agent can "
                "train or hold a share (pip install 'edgeloop[train,datasets]')")  # fmt: skip
    return None


def fleet_share(dataset: str, federated: bool) -> FlData | None:
    """Each agent's share of ``dataset`` for the fleet stage to write before its agents start
    (None when the stage is off or cannot run: no agent then starts a torch worker)."""
    if not federated or cannot_train(dataset) is not None:
        return None
    from edgeloop.federated.partition import Partition
    from edgeloop.sdk.fl_data import FlData

    return FlData(dataset, Partition.parse(PARTITION), SHARE_SEED)


def federated_stage(
    fleet: LocalFleet | None,
    dataset: str,
    out_dir: Path,
    *,
    rounds: int = ROUNDS,
    model: str = MODEL,
) -> FederatedStageResult | Skipped:
    """:func:`run_federated_stage` on the fleet the fleet stage left running, or Skipped with
    the reason (no running fleet, nothing to train with, no agent holding a share).

    Raises:
        EdgeError: from :func:`run_federated_stage`.
    """
    if fleet is None:
        return Skipped("the fleet stage stopped its fleet (no running fleet was handed on)")
    why = cannot_train(dataset)
    if why is not None:
        return Skipped(why)
    if not any((a.home / SHARE_FILE).is_file() for a in fleet.agents):
        return Skipped(f"no agent of the fleet in {fleet.folder} holds a federated data share "
                       "(start it with `edgeloop fleet up --fl-data digits`)")  # fmt: skip
    return run_federated_stage(fleet, out_dir, rounds=rounds, model=model)


def run_federated_stage(
    fleet: LocalFleet, out_dir: Path, *, rounds: int = ROUNDS, model: str = MODEL
) -> FederatedStageResult | Skipped:
    """Wait for the agents' workers, run a ``rounds``-round FedAvg task of ``model`` across
    them, plot its accuracy curve into ``out_dir``. Skipped (with the workers' log) when no
    worker polled within ``WORKERS_TIMEOUT_S``.

    Raises:
        TransportError: the control plane failed a call, or the task did not end in time.
        ConfigError, NotFoundError: what the FL API refused.
    """
    from edgeloop.pipeline.federated_stage_report import plot_federated
    from edgeloop.sdk.federated import _wait

    started = time.perf_counter()
    with fleet.admin(timeout_s=60.0) as admin:
        names = {str(n["node_id"]): str(n["name"]) for n in admin.nodes()}
        workers = _wait_workers(admin, len(fleet.agents))
        waited = time.perf_counter() - started
        if not workers:
            return Skipped(f"no agent's federated worker polled within {WORKERS_TIMEOUT_S:.0f} "
                           f"s; {_worker_log(fleet)}")  # fmt: skip
        n = len(workers)
        spec = {"model": model, "strategy": STRATEGY, "rounds": rounds, "clients_per_round": n,
                "min_clients": n, "deadline_s": DEADLINE_S, "seed": 0, "local": LOCAL}  # fmt: skip
        posted = time.perf_counter()
        task = admin.call("POST", "/api/v1/fl/tasks", json=spec)  # makes the initial model
        created = time.perf_counter()
        doc = _wait(admin, str(task["task_id"]), TASK_TIMEOUT_S)
        ended = time.perf_counter()
    table = round_rows(doc, names)
    plot = out_dir / "federated_accuracy.png"
    initial = (doc.get("initial_evaluation") or {}).get("accuracy")
    plot_federated(table, initial, plot, title=f"{model}, FedAvg over {n} agents (IID shares)")
    body = {
        "task_id": doc["task_id"],
        "model": model,
        "strategy": STRATEGY,
        "rounds": rounds,
        "local": LOCAL,
        "state": doc["state"],
        "reason": doc.get("reason"),
        "data": _data_block(workers, names),
        "initial_accuracy": initial,
        "rounds_table": table,
        "final_accuracy": table[-1]["accuracy"] if table else None,
        "registration": _registration(doc),
        "plot": str(plot),
        "command": f"edgeloop fl status {doc['task_id']} --dir {fleet.folder}",
        "seconds": round(time.perf_counter() - started, 2),
        "seconds_parts": _seconds_parts(doc, waited, created - posted, ended - created),
    }
    return FederatedStageResult(body)


def round_rows(doc: dict[str, Any], names: dict[str, str]) -> list[dict[str, Any]]:
    """One row per closed round of a task's status document (``GET /api/v1/fl/tasks/{id}``).

    ``accuracy`` is the model *after* the round, scored by the next round's clients (the last
    round's by the final evaluation step) on their test shares, ``eval_samples`` of them;
    ``seconds`` is the control plane's time from the round's selection to its close.
    """
    rows = []
    for h in doc["history"]:
        if h.get("closed_at") is None:
            continue
        rows.append({
            "round": int(h["round"]),
            "accuracy": h.get("accuracy"),
            "eval_samples": int(h.get("eval_samples") or 0),
            "participants": sorted(names.get(i, i) for i in h["participants"]),
            "dropouts": sorted(names.get(i, i) for i in h["dropouts"]),
            "rejected": len(h.get("rejected") or {}),
            "train_samples": int(h.get("num_samples") or 0),
            "client_loss": h.get("client_loss"),
            "seconds": round(float(h["closed_at"]) - float(h["started_at"]), 3),
            "bytes_up": int(h["bytes_up"]),
            "bytes_down": int(h["bytes_down"]),
        })  # fmt: skip
    return rows


def _seconds_parts(
    doc: dict[str, Any], waited: float, create: float, run: float
) -> dict[str, float]:
    """Where the stage's time went: waiting for the workers, creating the task (the control
    plane makes the seeded initial model in a torch process), the rounds (the first's start to
    the last's close, on the control plane's clock), the rest of the task (the final model
    scored by the clients, exported to ONNX and registered; this stage's 0.25 s polling)."""
    closed = [h for h in doc["history"] if h.get("closed_at") is not None]
    rounds = float(closed[-1]["closed_at"]) - float(closed[0]["started_at"]) if closed else 0.0
    return {"waiting_for_workers": round(waited, 2), "creating_task": round(create, 2),
            "task": round(create + run, 2), "rounds": round(rounds, 2),
            "final_evaluation_and_registration": round(run - rounds, 2)}  # fmt: skip


def _wait_workers(admin: Any, agents: int) -> list[dict[str, Any]]:
    """The eligible workers once all ``agents`` poll, or those that did by the timeout."""
    deadline = time.monotonic() + WORKERS_TIMEOUT_S
    while True:
        clients = admin.call("GET", "/api/v1/fl/clients")["clients"]
        found = [c for c in clients if c["eligible"]]
        if len(found) >= agents or time.monotonic() > deadline:
            return found
        time.sleep(0.25)


def _data_block(workers: list[dict[str, Any]], names: dict[str, str]) -> dict[str, Any]:
    shares = {names.get(c["node_id"], c["node_id"]): {"train": c["train_samples"],
              "test": c["test_samples"]} for c in workers}  # fmt: skip
    return {
        "partition": PARTITION,
        "seed": SHARE_SEED,
        "split": "issue 14's: train_test_split(test_size=0.2, random_state=42, stratify=y); "
        "the train part partitioned across the agents, the test part cut into equal shares "
        "(together the held-out set)",
        "shares": dict(sorted(shares.items())),
        "held_out_samples": sum(int(s["test"]) for s in shares.values()),
    }


def _registration(doc: dict[str, Any]) -> dict[str, Any]:
    reg = doc.get("registration") or {}
    where = "the fleet's control plane (`edgeloop fleet deploy REF` rolls it out)"
    return {"state": reg.get("state"), "ref": reg.get("ref"), "reason": reg.get("reason"),
            "registry": where}  # fmt: skip


def _worker_log(fleet: LocalFleet) -> str:
    """The end of the first agent's worker log (why its torch process did not start)."""
    log = fleet.agents[0].home / "agent" / "fl" / "worker.log"
    try:
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
    except OSError:
        return f"{log} is missing"
    return f"{log}: " + (" | ".join(tail) or "empty")
