"""Federated rounds across real agent processes, measured beside the in-process reference loop.

    .venv/bin/python bench/fl_fleet_bench.py                      # 5 agents, iid + dirichlet:0.5
    .venv/bin/python bench/fl_fleet_bench.py --nodes 10 --rounds 20 --format json
    .venv/bin/python bench/fl_fleet_bench.py --nodes 10 --partitions iid --variants plain \
        --shared-imports    # agents and workers forked from zygotes (fleet up --shared-imports)

For each partition: `fleet up --fl-data digits --partition P` (one `edgeloop control` and N
`edgeloop agent` processes on loopback, each agent with its own share and its own torch worker
process), then one task: digits-cnn (issue 14's net, torch.manual_seed(0)), FedAvg, all N clients
every round, local SGD lr 0.05 / 1 epoch / batch 32, shuffle seed round*1000 + client id.

Measured per round (the control plane's clock, in the task's history): wall time from the
round's selection to its close, bytes uploaded and downloaded (bodies as received / sent).
The global model of every round is downloaded through the API and scored here on the 360
held-out images (the issue's centralized evaluation). In the same run, from the same shares and
seeds: the plain in-process FedAvg loop (the reference trajectory) and centralized training
(one model, all 1,437 training images pooled, one epoch per round, same init and SGD).
Memory, sampled every 0.2 s while the task runs, over the control plane, the agents, their
workers and, with --shared-imports, the two zygotes they were forked from (part of the tree, so
counted): the peak of the summed resident sets (RSS: a page shared by N processes, torch's
libraries say, counts N times) and the peak of the summed proportional set sizes (PSS, from
/proc/PID/smaps_rollup: a shared page counts 1/N in each of its N processes, so the sum counts
it once), also per role (control, agents, workers, zygotes: each role's own peak), and the
1-minute load average (/proc/loadavg) seen during the task. Per round, where its time went
(the task history's ``phases_s``: the first and last download and upload after the
selection, the clients' own fetch and training times).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from edgeloop.federated import FedAvg, Participation, ServerState, UpdateLimits, close_round  # noqa: E402
from edgeloop.federated.partition import Partition  # noqa: E402
from edgeloop.sdk.fl_data import FlData, NodeShare  # noqa: E402
from edgeloop.sdk.local_fleet import LocalFleet, up  # noqa: E402
from edgeloop.training.federated_client import (  # noqa: E402
    LocalSGD,
    digits_cnn,
    evaluate,
    get_weights,
    set_weights,
    train_local,
)

CONFIG = LocalSGD(lr=0.05, epochs=1, batch_size=32)


def _tree_rss_mb(pids: list[int]) -> float:
    """Sum of VmRSS over ``pids`` and all their descendants (Linux /proc)."""
    return _tree_memory_mb(pids)[0]


def _children() -> dict[int, list[int]]:
    """Each pid's children, read once from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    return children


def _tree(pids: list[int], children: dict[int, list[int]] | None = None) -> list[int]:
    """``pids`` and all their descendants (Linux /proc)."""
    children = _children() if children is None else children
    seen: list[int] = []
    todo = list(pids)
    while todo:
        pid = todo.pop()
        if pid not in seen:
            seen.append(pid)
            todo += children.get(pid, [])
    return seen


def _memory_mb(pids: list[int]) -> tuple[float, float]:
    """(RSS sum, PSS sum) in MB over ``pids`` themselves, from /proc/PID/smaps_rollup (its
    Rss line is the same figure as status' VmRSS)."""
    rss = pss = 0.0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1]) / 1024
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1]) / 1024
        except (OSError, IndexError, ValueError):  # ended meanwhile
            continue
    return rss, pss


def _tree_memory_mb(pids: list[int]) -> tuple[float, float]:
    """(RSS sum, PSS sum) in MB over ``pids`` and their descendants."""
    return _memory_mb(_tree(pids))


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process (0 once it ended)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def roles(control: int, agents: list[int], zygotes: list[int]) -> dict[str, list[int]]:
    """The fleet's processes now, by role, each once: the control plane and its children, the
    agents, the training workers (the agents' descendants, or the zygotes' children that are
    not agents), the zygotes themselves."""
    children = _children()
    workers = [p for p in _tree(agents + zygotes, children) if p not in agents + zygotes]
    return {"control": _tree([control], children), "agents": list(agents), "workers": workers,
            "zygotes": list(zygotes)}  # fmt: skip


def cpu_by_role(control: int, agents: list[int], zygotes: list[int]) -> dict[str, float]:
    """CPU seconds used so far by each role's processes (:func:`roles`)."""
    by_role = roles(control, agents, zygotes)
    return {role: sum(_cpu_s(p) for p in pids) for role, pids in by_role.items()}


def memory_by_role_mb(
    control: int, agents: list[int], zygotes: list[int]
) -> dict[str, tuple[float, float]]:
    """(RSS sum, PSS sum) now of each role's processes."""
    return {role: _memory_mb(pids) for role, pids in roles(control, agents, zygotes).items()}


def _read_load() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


class RssSampler(threading.Thread):
    """Peak summed RSS and peak summed PSS of the fleet's processes (each its own peak), the
    same per role, and the lowest and highest 1-minute load average seen."""

    def __init__(self, control: int, agents: list[int], zygotes: list[int]) -> None:
        super().__init__(daemon=True)
        self.who = (control, agents, zygotes)
        self.peak, self.peak_pss, self.stop = 0.0, 0.0, threading.Event()
        self.by_role: dict[str, list[float]] = {}  # role: [peak RSS, peak PSS]
        self.load = [_read_load()] * 2

    def run(self) -> None:
        while not self.stop.is_set():
            now = memory_by_role_mb(*self.who)
            self.peak = max(self.peak, sum(r for r, _ in now.values()))
            self.peak_pss = max(self.peak_pss, sum(p for _, p in now.values()))
            for role, (rss, pss) in now.items():
                peak = self.by_role.setdefault(role, [0.0, 0.0])
                peak[0], peak[1] = max(peak[0], rss), max(peak[1], pss)
            load = _read_load()
            self.load = [min(self.load[0], load), max(self.load[1], load)]
            self.stop.wait(0.2)


def test_set(shares: list[NodeShare]) -> tuple[torch.Tensor, torch.Tensor]:
    x = np.concatenate([s.x_test for s in shares])
    y = np.concatenate([s.y_test for s in shares])
    return torch.from_numpy(x), torch.from_numpy(y)


def reference(shares: list[NodeShare], rounds: int) -> list[float]:
    """The plain in-process FedAvg loop on the same shares: accuracy after each round."""
    torch.manual_seed(0)
    model = digits_cnn()
    weights, state, out = get_weights(model), ServerState(), []
    x_test, y_test = test_set(shares)
    for rnd in range(1, rounds + 1):
        updates = [
            train_local(model, weights, torch.from_numpy(s.x_train), torch.from_numpy(s.y_train),
                        node_id=str(s.client_id), round=rnd, seed=rnd * 1000 + s.client_id,
                        config=CONFIG)
            for s in shares
        ]  # fmt: skip
        n = len(shares)
        done = close_round(
            round=rnd, strategy=FedAvg(), global_weights=weights, state=state,
            selected=[u.node_id for u in updates], updates=updates,
            limits=UpdateLimits(rnd, weights.size, weights.nbytes),
            participation=Participation(min_clients=n, min_available=n),
        )  # fmt: skip
        assert done.aggregate is not None
        weights, state = done.aggregate.weights, done.aggregate.state
        set_weights(model, weights)
        out.append(evaluate(model, x_test, y_test)[1])
    return out


def centralized(shares: list[NodeShare], rounds: int) -> list[float]:
    """One model on all training images pooled, one epoch per round, same init and SGD."""
    torch.manual_seed(0)
    model = digits_cnn()
    x = torch.from_numpy(np.concatenate([s.x_train for s in shares]))
    y = torch.from_numpy(np.concatenate([s.y_train for s in shares]))
    x_test, y_test = test_set(shares)
    weights, out = get_weights(model), []
    for rnd in range(1, rounds + 1):
        update = train_local(model, weights, x, y, node_id="all", round=rnd, seed=rnd * 1000,
                             config=CONFIG)  # fmt: skip
        weights = update.weights
        set_weights(model, weights)
        out.append(evaluate(model, x_test, y_test)[1])
    return out


def _wait_clients(fleet: LocalFleet, n: int) -> None:
    with fleet.admin() as admin:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            ready = [c for c in admin.call("GET", "/api/v1/fl/clients")["clients"] if c["eligible"]]
            if len(ready) >= n:
                return
            time.sleep(0.2)
    raise SystemExit(f"fewer than {n} federated workers became ready")


def _task(admin: Any, body: dict[str, Any], stall: list[Path]) -> tuple[dict[str, Any], float]:
    """Run one task to its end; (status, seconds from creation to the last round's close, on
    the control plane's clock)."""
    task = admin.call("POST", "/api/v1/fl/tasks", json=body)
    start = time.perf_counter()
    while True:
        doc = admin.call("GET", f"/api/v1/fl/tasks/{task['task_id']}")
        if stall and doc["round"] > 1:  # round 1 closed without them: let them go on
            for hook in stall:
                hook.unlink(missing_ok=True)
            stall = []
        if doc["phase"] in ("evaluating", "done", "failed"):
            break
        time.sleep(0.25)  # a status read is a write transaction: poll as an admin would
    closed = [h["closed_at"] for h in doc["history"] if h["closed_at"]]
    rounds_s = (max(closed) - doc["created_at"]) if closed else time.perf_counter() - start
    while doc["state"] == "running" or (doc["registration"] or {}).get("state") in (
        "pending", "running"
    ):  # fmt: skip
        time.sleep(0.1)
        doc = admin.call("GET", f"/api/v1/fl/tasks/{task['task_id']}")
    return doc, rounds_s


def across_fleet(
    nodes: int, partition: str, rounds: int, shares: list[NodeShare], variants: list[str],
    shared_imports: bool = False,
) -> list[dict[str, Any]]:  # fmt: skip
    """One fleet, one task per variant (plain, secagg, dp), one after the other."""
    data = FlData("digits", Partition.parse(partition))
    runs = []
    with tempfile.TemporaryDirectory(prefix="fl-fleet-bench-") as tmp:
        t0 = time.perf_counter()
        with up(Path(tmp), nodes, fl_data=data, shared_imports=shared_imports) as fleet:
            _wait_clients(fleet, nodes)
            ready_s = time.perf_counter() - t0
            with fleet.admin(timeout_s=300) as admin:
                for variant in variants:
                    body = {"model": "digits-cnn", "rounds": rounds, "clients_per_round": nodes,
                            "min_clients": nodes, "deadline_s": 120.0, "seed": 0,
                            "local": {"lr": 0.05, "epochs": 1, "batch_size": 32}}  # fmt: skip
                    stall: list[Path] = []
                    if variant == "secagg":  # clients drop after masking in round 1:
                        # 3 of 10 (issue 14), fewer on smaller fleets (t = n // 2 + 1 must answer)
                        drops = min(3, nodes - (nodes // 2 + 1))
                        body.update(secagg=True, min_clients=nodes - drops, deadline_s=5.0)
                        stall = [a.home / "agent" / "fl" / "stall-at-round"
                                 for a in fleet.agents[nodes - drops:]]  # fmt: skip
                        for hook in stall:
                            hook.write_text("1:unmask")
                    if variant == "dp":
                        body["dp"] = {"noise_multiplier": 1.0, "clip_norm": 1.0, "delta": 1e-5}
                    agents = [a.pid for a in fleet.agents]
                    who = (fleet.control.pid, agents, [z.pid for z in fleet.zygotes])
                    sampler = RssSampler(*who)
                    sampler.start()
                    cpu0 = cpu_by_role(*who)
                    doc, rounds_s = _task(admin, body, stall)
                    cpu1 = cpu_by_role(*who)
                    end = memory_by_role_mb(*who)
                    sampler.stop.set()
                    sampler.join()
                    if doc["state"] != "done":
                        print(f"{variant}: {doc['state']}: {doc['reason']}", file=sys.stderr)
                    done = doc["rounds_done"]
                    models = [_model(admin, doc["task_id"], r) for r in range(2, done + 2)]
                    run = _summary(doc, models, shares)
                    extra = {"variant": variant, "partition": partition, "nodes": nodes,
                             "rounds_total_s": rounds_s, "fleet_ready_s": ready_s,
                             "shared_imports": shared_imports,
                             "processes": {k: len(v) for k, v in roles(*who).items()},
                             "peak_tree_rss_mb": sampler.peak,
                             "peak_tree_pss_mb": sampler.peak_pss,
                             "peak_by_role_mb": {k: {"rss": v[0], "pss": v[1]}
                                                 for k, v in sampler.by_role.items()},
                             "load_avg_1m_during": sampler.load,
                             "cpu_s_per_round": {k: (cpu1[k] - cpu0[k]) / rounds
                                                 for k in cpu0},
                             "pss_by_role_at_end_mb": {k: v[1] for k, v in end.items()},
                             "load_avg_after": os.getloadavg()}  # fmt: skip
                    runs.append({**run, **extra})
    return runs


def _summary(
    doc: dict[str, Any], models: list[np.ndarray], shares: list[NodeShare]
) -> dict[str, Any]:
    x_test, y_test = test_set(shares)
    model, accuracy = digits_cnn(), []
    for weights in models:
        set_weights(model, weights)
        accuracy.append(evaluate(model, x_test, y_test)[1])
    history = doc["history"]
    round_s = [h["closed_at"] - h["started_at"] for h in history if h["closed_at"]]
    return {
        "state": doc["state"], "reason": doc["reason"], "registration": doc["registration"],
        "accuracy_per_round": accuracy,
        "federated_eval_accuracy_per_round": [h["accuracy"] for h in history],
        "round_s": round_s, "round_s_median_2_on": statistics.median(round_s[1:]),
        "phases_s_median_2_on": _phase_medians(history[1:]),
        "bytes_up_per_round": history[-1]["bytes_up"],
        "bytes_down_per_round": history[-1]["bytes_down"],
        "epsilon": doc["epsilon"],
        "round1": {k: history[0].get(k) for k in ("participants", "dropouts",
                                                  "dropped_after_masking", "secagg_threshold")},
        "client_sizes": [len(s.y_train) for s in shares],
    }  # fmt: skip


def _phase_medians(history: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Per phase of the round records' ``phases_s`` (absent before this field existed), the
    median over rounds of its [first, last] times."""
    keys = sorted({k for h in history for k, v in (h.get("phases_s") or {}).items()
                   if isinstance(v, list)})  # fmt: skip
    return {k: [statistics.median(h["phases_s"][k][i] for h in history
                                  if k in (h.get("phases_s") or {})) for i in (0, 1)]
            for k in keys}  # fmt: skip


def _model(admin: Any, task_id: str, rnd: int) -> np.ndarray:
    got = admin._http.get(f"/api/v1/fl/tasks/{task_id}/rounds/{rnd}/model")
    if got.status_code != 200:
        raise SystemExit(f"round {rnd}'s model: {got.status_code} {got.text[:200]}")
    data = got.content
    return np.frombuffer(data, dtype="<f4").astype(np.float64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--partitions", default="iid,dirichlet:0.5")
    parser.add_argument("--variants", default="plain,secagg,dp", help="on the iid fleet")
    parser.add_argument(
        "--shared-imports",
        action="store_true",
        help="fleet up --shared-imports: agents and workers forked from zygotes",
    )
    parser.add_argument("--format", choices=["text", "json"], default="text")
    args = parser.parse_args()
    torch.set_num_threads(1)
    runs = []
    for partition in args.partitions.split(","):
        shares = FlData("digits", Partition.parse(partition)).shares(args.nodes)
        variants = args.variants.split(",") if partition == "iid" else ["plain"]
        done = across_fleet(args.nodes, partition, args.rounds, shares, variants,
                            args.shared_imports)  # fmt: skip
        ref = reference(shares, args.rounds)
        cen = centralized(shares, args.rounds)
        for run in done:
            run["reference_accuracy_per_round"] = ref
            run["centralized_accuracy_per_round"] = cen
            gap = np.abs(np.subtract(run["accuracy_per_round"], ref))
            run["max_gap_vs_reference_pp"] = float(gap.max() * 100)
        runs += done
    result = {
        "command": " ".join(["bench/fl_fleet_bench.py", *sys.argv[1:]]),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "python": platform.python_version(), "torch": torch.__version__,
                    "load_avg_end": os.getloadavg()},
        "runs": runs,
    }  # fmt: skip
    if args.format == "json":
        print(json.dumps(result, indent=2))
        return
    for r in runs:
        acc, ref, cen = (r[k] for k in ("accuracy_per_round", "reference_accuracy_per_round",
                                        "centralized_accuracy_per_round"))  # fmt: skip
        print(f"{r['variant']} {r['partition']} ({r['nodes']} agents, sizes {r['client_sizes']}):"
              f" {r['state']}, epsilon {r['epsilon']}, round 1 {r['round1']}")  # fmt: skip
        for i in sorted({4, 9, args.rounds - 1} & set(range(args.rounds))):
            print(f"  round {i + 1}: fleet {acc[i]:.4f}  in-process {ref[i]:.4f}  "
                  f"centralized {cen[i]:.4f}")  # fmt: skip
        print(f"  max |fleet - in-process| {r['max_gap_vs_reference_pp']:.2f} pp; round s median "
              f"(2..) {r['round_s_median_2_on']:.3f}, first {r['round_s'][0]:.3f}; "
              f"{args.rounds} rounds {r['rounds_total_s']:.1f} s; bytes/round up "
              f"{r['bytes_up_per_round']} down "
              f"{r['bytes_down_per_round']}; peak tree RSS sum {r['peak_tree_rss_mb']:.0f} MB, "
              f"PSS sum {r['peak_tree_pss_mb']:.0f} MB (by role {r['peak_by_role_mb']}); "
              f"load {r['load_avg_1m_during']} during, {r['load_avg_after']} after; "
              f"registered {r['registration']}")  # fmt: skip
        print(f"  CPU s per round: {r['cpu_s_per_round']}")
        print(
            f"  phases (median over rounds 2.., [first, last] s after selection): "
            f"{r['phases_s_median_2_on']}"
        )


if __name__ == "__main__":
    main()
