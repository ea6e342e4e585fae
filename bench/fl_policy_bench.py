"""Nodes' power policy, CPU-time budget and resource-aware selection across real agents.

    .venv/bin/python bench/fl_policy_bench.py [--nodes 3] [--rounds 3] [--budget-s 0.05]

`fleet up --nodes N --fl-data digits --partition iid`; then each node's policy
(`HOME/agent/fl/policy.json`): node-1 has no budget, node-2 a CPU budget of ``--budget-s``
seconds a round, the last node reads its power state from a folder laid out as the kernel's
power-supply class that says "battery discharging at 20%" (this machine has no battery: the
folder stands in for /sys/class/power_supply; every other node reads the real one). Two tasks
of digits-cnn (issue 14's net), ``--rounds`` rounds, all nodes asked:

- ``fairness`` (blind to power): the battery node is asked and declines every round;
- ``resource``: the battery node is never asked (``low_battery``), the others ranked.

Printed per round and node: why it was or was not selected, the samples its update used, the
CPU seconds its training worker measured (``time.process_time`` of the worker: user+sys of all
its threads, training only), a decline's reason; and the round's wall time on the control
plane's clock.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from edgeloop.federated.partition import Partition  # noqa: E402
from edgeloop.sdk.fl_data import FlData  # noqa: E402
from edgeloop.sdk.local_fleet import up  # noqa: E402


def _wait(client: Any, task_id: str) -> dict[str, Any]:
    while True:
        doc: dict[str, Any] = client.call("GET", f"/api/v1/fl/tasks/{task_id}")
        if doc["state"] != "running":
            return doc
        time.sleep(0.2)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--budget-s", type=float, default=0.05)
    args = p.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="fl-policy-"))
    out: dict[str, Any] = {"machine": {"python": platform.python_version(),
                                       "load_1m_at_start": os.getloadavg()[0]}}  # fmt: skip
    with up(folder, args.nodes, fl_data=FlData("digits", Partition.parse("iid"))) as fleet:
        power = folder / "battery-supply"
        supply = {"AC/type": "Mains", "AC/online": "0", "BAT0/type": "Battery",
                  "BAT0/status": "Discharging", "BAT0/capacity": "20"}  # fmt: skip
        for name, text in supply.items():
            (power / name).parent.mkdir(parents=True, exist_ok=True)
            (power / name).write_text(text + "\n")
        policies = {1: {"cpu_seconds_per_round": args.budget_s},
                    args.nodes - 1: {"power_supply": str(power)}}  # fmt: skip
        for i, doc in policies.items():
            (fleet.agents[i].home / "agent" / "fl" / "policy.json").write_text(json.dumps(doc))
        with fleet.admin(timeout_s=120) as client:
            names = {n["node_id"]: n["name"] for n in client.nodes()}
            while True:
                polled = client.call("GET", "/api/v1/fl/clients")["clients"]
                if sum(c["eligible"] for c in polled) == args.nodes and any(
                    c["power"] == "battery" for c in polled
                ):
                    break
                time.sleep(0.5)
            for selector in ("fairness", "resource"):
                body = {
                    "model": "digits-cnn",
                    "rounds": args.rounds,
                    "selector": selector,
                    "clients_per_round": args.nodes,
                    "min_clients": 1,
                    "deadline_s": 60.0,
                }
                doc = _wait(client, client.call("POST", "/api/v1/fl/tasks", json=body)["task_id"])
                rounds = []
                for h in doc["history"][: args.rounds]:
                    rounds.append({
                        "round": h["round"], "seconds": round(h["closed_at"] - h["started_at"], 3),
                        "why": {names[n]: w for n, w in h["why"].items()},
                        "samples": {names[n]: s for n, s in h["client_samples"].items()},
                        "cpu_s": {names[n]: round(s, 4) for n, s in h["client_cpu_s"].items()},
                        "declined": {names[n]: r for n, r in h["declined"].items()},
                        "num_samples": h["num_samples"], "accuracy": h["accuracy"],
                    })  # fmt: skip
                out[selector] = {"state": doc["state"], "reason": doc["reason"], "rounds": rounds}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
