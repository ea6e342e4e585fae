"""``federated_learning_round``: a federated task run through the control plane's FL API.

The control plane runs the rounds (control/fl_api.py, docs/federated.md): it selects clients
among the agents whose federated worker polls with a data share, sends them the global model,
aggregates their updates with the task's strategy and measures the aggregated update's L2 norm
(``update_norm``). The SDK creates the task, waits until it ends, and reads its last round.

The FL API picks a round's clients itself (its selector over every eligible worker); it cannot
pin a round to named nodes. So ``client_nodes`` must be exactly the eligible workers: anything
else is refused rather than run on other nodes than asked.
"""

from __future__ import annotations

import time
from typing import Any

from edgeloop.core.errors import ConfigError, TransportError
from edgeloop.sdk.control_client import ControlClient
from edgeloop.sdk.results import FederatedRound

ENDED = ("done", "failed", "stopped")
POLL_S = 0.25


def run_rounds(
    control: ControlClient,
    model_id: str,
    client_nodes: list[str],
    *,
    rounds: int = 1,
    strategy: str = "fedavg",
    local: dict[str, Any] | None = None,
    deadline_s: float = 60.0,
    seed: int = 0,
    timeout_s: float = 300.0,
) -> FederatedRound:
    """Run a ``rounds``-round task of FL model ``model_id`` (``digits-mlp``, ``digits-cnn``)
    on ``client_nodes`` (names or ids); the last round's figures.

    Raises:
        ConfigError: no client nodes; a node that is unknown or holds no federated data share.
        NotFoundError, ConfigError: what the FL API refuses (unknown model or strategy).
        TransportError: the task failed or did not end within ``timeout_s``.
    """
    ids = _client_ids(control, client_nodes)
    body: dict[str, Any] = {
        "model": model_id, "strategy": strategy, "rounds": rounds,
        "clients_per_round": len(ids), "min_clients": len(ids), "deadline_s": deadline_s,
        "seed": seed, "local": local or {},
    }  # fmt: skip
    task = control.call("POST", "/api/v1/fl/tasks", json=body)
    doc = _wait(control, str(task["task_id"]), timeout_s)
    if doc["state"] != "done" or not doc["history"]:
        why = doc.get("reason") or doc["state"]
        raise TransportError(
            f"federated task {doc['task_id']} on {client_nodes} ended {doc['state']}: {why}",
            hint=f"`edgeloop fl status {doc['task_id']}` shows its rounds",
        )
    last = doc["history"][-1]
    names = {str(n["node_id"]): str(n["name"]) for n in control.nodes()}
    accuracy = last.get("accuracy")
    return FederatedRound(
        round=int(last["round"]),
        total_samples=int(last["num_samples"]),
        aggregated_update=float(last["update_norm"]),
        accuracy=None if accuracy is None else float(accuracy),
        eval_samples=int(last.get("eval_samples") or 0),
        loss=last.get("loss"),
        participants=[names.get(n, n) for n in last["participants"]],
        dropouts=[names.get(n, n) for n in last["dropouts"]],
        task_id=str(doc["task_id"]),
        registered=(doc.get("registration") or {}).get("ref"),
        model=model_id,
        strategy=strategy,
        reason=None if accuracy is not None else "no participant holds a test share",
    )


def _client_ids(control: ControlClient, client_nodes: list[str]) -> list[str]:
    if not client_nodes:
        raise ConfigError("client_nodes is empty; name the nodes that train, e.g. ['node-1']")
    nodes = control.nodes()
    by_key = {str(n[k]): str(n["node_id"]) for n in nodes for k in ("name", "node_id")}
    names = {str(n["node_id"]): str(n["name"]) for n in nodes}
    unknown = [c for c in client_nodes if c not in by_key]
    if unknown:
        raise ConfigError(
            f"client nodes {unknown} are not enrolled (nodes: {', '.join(sorted(names.values()))})"
        )
    clients = control.call("GET", "/api/v1/fl/clients")["clients"]
    eligible = {str(c["node_id"]) for c in clients if c["eligible"]}
    wanted = {by_key[c] for c in client_nodes}
    if wanted != eligible:
        shown = sorted(names.get(n, n) for n in eligible) or "none"
        raise ConfigError(
            f"client_nodes {sorted(client_nodes)} are not the fleet's federated workers "
            f"({shown}: the nodes whose worker polled recently with a data share); the FL API "
            "selects a round's clients among all of them, so it cannot run on a subset",
            hint="give each training node its share (`edgeloop fleet up --fl-data digits "
            "--partition iid`) and name exactly those nodes",
        )
    return sorted(wanted)


def _wait(control: ControlClient, task_id: str, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        doc: dict[str, Any] = control.call("GET", f"/api/v1/fl/tasks/{task_id}")
        registering = (doc.get("registration") or {}).get("state") in ("pending", "running")
        if doc["state"] in ENDED and not registering:
            return doc
        if time.monotonic() > deadline:
            control.call("POST", f"/api/v1/fl/tasks/{task_id}/stop")
            raise TransportError(
                f"federated task {task_id} did not end within {timeout_s:.0f} s (round "
                f"{doc.get('round')}); it was stopped",
                hint="raise timeout_s, or check the agents' fl worker logs",
            )
        time.sleep(POLL_S)
