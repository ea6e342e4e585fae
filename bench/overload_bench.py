"""Goodput at 2x capacity: the app's refusal path and the header-time one, side by side in one run.

    .venv/bin/python bench/overload_bench.py [--rounds 3] [--duration 10] [--out bench]

Two ``edgeloop serve`` processes of the same model run at once, the same code but for one
flag: ``--no-early-refusal`` (the old path: a request is refused by the app, after the
framework, routing and an ASGI task; docs/serving.md) and the default (refused from its headers
by ``edgeloop.serving.shed``). Each round measures, for each server in turn (the order
alternates from round to round, so that a drift in the machine's load falls on both alike):

1. its capacity: the offline throughput with 64 requests in flight (as in
   ``bench/serve_bench.py``), after a 3 s closed-loop probe;
2. Poisson arrivals at twice that capacity for ``--duration`` seconds (``serve_bench.overload``):
   answers, refusals, latency from send, and the server's own view from its metrics;
3. the server's CPU seconds (its event loop thread, which does all the HTTP work, and its
   other threads) over that run, per request answered or refused.

Goodput is 200 answers per second of the run over the capacity. The admitted p99 is compared
with the queue delay budget (``--max-queue-delay-ms``, 1000 ms by default). The model is the
small CNN of ``serve_bench.py`` (a fast model run on the event loop: the case where the HTTP
work, refusals included, is the bottleneck) unless ``--dense`` picks the 4096-wide head (the
engine is the bottleneck). Results: ``OUT/serve_bench_overload_compare.json``; the markdown
table is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import loadgen
import serve_bench as sb

MODES = {"old (app refuses)": ("--no-early-refusal",), "new (headers refuse)": ()}


def measure(srv: sb.Server, query: Any, duration: float) -> dict[str, Any]:
    """Capacity, then 2x capacity for ``duration`` s, with the server's CPU time per request."""
    pid = int(srv.info["pid"])
    probe = sb.closed(srv.address, query, min(duration, 3.0))
    offline_cpu, offline = _with_cpu(
        pid, lambda: sb.offline_http(srv.address, query, probe["throughput_per_s"])
    )
    capacity = float(offline["throughput_per_s"])
    cpu, result = _with_cpu(pid, lambda: sb.overload(srv, query, capacity, duration))
    run = result["run"]
    ok, refused = run["ok"], run["statuses"].get("429", 0)
    # CPU seconds per answer at capacity (every request answered 200), and what the refusals
    # cost on top of the answers at 2x: (CPU - answers x that) / refusals.
    served_s = offline_cpu / max(1, offline["ok"])
    refusal_s = (cpu - ok * served_s) / refused if refused else None
    result["offline_statuses"] = offline["statuses"]
    result["server_cpu_s"] = {
        "offline": offline_cpu,
        "overload": cpu,
        "per_answer_at_capacity_us": served_s * 1e6,
        "per_refusal_us": None if refusal_s is None else refusal_s * 1e6,
    }
    result["goodput_ratio"] = run["throughput_per_s"] / capacity if capacity else None
    # The same ratio per CPU second the server got (answers per CPU second at 2x over answers
    # per CPU second at capacity): what other jobs on the machine took is taken out of it.
    result["goodput_ratio_per_cpu_s"] = (ok / cpu) / (offline["ok"] / offline_cpu) if cpu else None
    return result


def _with_cpu(pid: int, work: Any) -> tuple[float, Any]:
    """(CPU seconds of process ``pid``, all threads, while ``work()`` ran; its result)."""
    before = sum(sb._cpu_by_thread(pid).values())
    result = work()
    return sum(sb._cpu_by_thread(pid).values()) - before, result


def refusal_cost(workdir: Path, seconds: float, threads: int) -> dict[str, Any]:
    """The event loop's CPU time per refused request, each path alone, no answers to mix in.

    A model's queue is held full (``--max-queue 1``) by one client sending a 64-row batch
    (~3 GFLOP, run in the engine's thread; a 64 KiB body) again and again, while 16 clients
    send 12-row requests (a 12 KiB body, as the CNN's) in a closed loop: nearly all of those
    are refused. The event loop thread's CPU seconds over the requests it handled is then the
    cost of a refusal (an upper bound: it includes the holder's few requests and the one-off
    requests admitted between two batches). The share of 429s is reported beside it.
    """
    model = _slow_model(workdir / "slow.onnx")
    rng = np.random.default_rng(3)
    held = rng.standard_normal((64, SLOW_WIDTH)).astype(np.float32)
    each = rng.standard_normal((12, SLOW_WIDTH)).astype(np.float32)
    found: dict[str, Any] = {}
    for mode, flags in MODES.items():
        cmd = ("--name", sb.MODEL_NAME, "--threads", str(threads), "--max-queue", "1")
        with sb.running(sb.start_edgeloop(mode, model, *cmd, *flags)) as srv:
            pid = int(srv.info["pid"])
            big = sb.queries(srv.address, held)["oip_binary"]
            small = sb.queries(srv.address, each)["oip_binary"]
            before = sb._cpu_by_thread(pid)
            run, batches = loadgen.run_async(_held(srv.address, big, small, seconds))
            after = sb._cpu_by_thread(pid)
        n = run.summary()
        handled = sum(n["statuses"].values()) + batches
        loop_s = after.get(pid, 0.0) - before.get(pid, 0.0)
        found[mode] = {
            "statuses": n["statuses"],
            "batches": batches,
            "event_loop_cpu_s": loop_s,
            "per_request_us": loop_s / max(1, handled) * 1e6,
            "refused_share": n["statuses"].get("429", 0) / max(1, handled),
            "requests_per_s": handled / n["duration_s"],
        }
    return found


SLOW_WIDTH = 256


def _slow_model(path: Path) -> Path:
    """384 MatMuls by one 256 x 256 weight: ~50 MFLOP a row, a 256 KiB file."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(1).standard_normal((SLOW_WIDTH, SLOW_WIDTH)) / SLOW_WIDTH**0.5
    nodes, prev = [], "input"
    for i in range(384):
        nodes.append(helper.make_node("MatMul", [prev, "w"], [f"h{i}"]))
        prev = f"h{i}"
    nodes.append(helper.make_node("Identity", [prev], ["output"]))
    shape = ["batch", SLOW_WIDTH]
    graph = helper.make_graph(
        nodes,
        "slow",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, shape)],
        initializer=[numpy_helper.from_array(w.astype(np.float32), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # as serve_bench.build_cnn: what the pinned onnxruntime reads
    onnx.save(model, path)
    return path


async def _held(address: Any, big: Any, small: Any, seconds: float) -> tuple[Any, int]:
    """(the closed loop's run, batches the holder sent meanwhile)."""
    sent = 0

    async def holder() -> None:
        nonlocal sent
        conn = await loadgen.AsyncConnection.open(address)
        while not done.is_set():
            status, _, _ = await conn.send(big)
            sent += status == 200
        conn.close()

    done = asyncio.Event()
    task = asyncio.ensure_future(holder())
    await asyncio.sleep(0.5)  # the first batch is in the queue
    run = await loadgen.closed_loop(address, small, 16, seconds, warmup_s=0.0)
    done.set()
    await task
    return run, sent


def compare(
    workdir: Path, rounds: int, duration: float, threads: int, dense: int
) -> dict[str, Any]:
    model = sb.build_cnn(workdir / f"cnn_{dense}.onnx", dense=dense)
    x = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32)
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    common = ("--name", sb.MODEL_NAME, "--threads", str(threads))
    servers = {mode: sb.start_edgeloop(mode, model, *common, *f) for mode, f in MODES.items()}
    try:
        for r in range(rounds):
            order = list(MODES) if r % 2 == 0 else list(reversed(MODES))
            for mode in order:
                srv = servers[mode]
                sb.log(f"round {r + 1}/{rounds}: {mode}")
                runs[mode].append(measure(srv, sb.queries(srv.address, x)["oip_binary"], duration))
    finally:
        for srv in servers.values():
            with sb.running(srv):
                pass
    return {"model": f"CNN, dense {dense}", "rounds": runs, "summary": summarize(runs)}


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per mode: the median over rounds of each figure (and every round's goodput ratio)."""

    def med(values: list[float | None]) -> float | None:
        found = [v for v in values if v is not None]
        return statistics.median(found) if found else None

    out: dict[str, Any] = {}
    for mode, results in runs.items():
        out[mode] = {
            "capacity_per_s": med([o["capacity_per_s"] for o in results]),
            "goodput_ratio": med([o["goodput_ratio"] for o in results]),
            "goodput_ratios": [o["goodput_ratio"] for o in results],
            "refused": med([o["run"]["statuses"].get("429", 0) for o in results]),
            "refused_p50_ms": med([o["run"]["refused_from_send_ms"]["p50"] for o in results]),
            "admitted_p99_ms": med([o["run"]["latency_from_send_ms"]["p99"] for o in results]),
            "admitted_p99_from_schedule_ms": med([o["run"]["latency_ms"]["p99"] for o in results]),
            "budget_ms": results[0]["max_queue_delay_ms"] if results else None,
            "goodput_ratio_per_cpu_s": med([o["goodput_ratio_per_cpu_s"] for o in results]),
            "cpu_us_per_answer": med(
                [o["server_cpu_s"]["per_answer_at_capacity_us"] for o in results]
            ),
            "cpu_us_per_refusal": med([o["server_cpu_s"]["per_refusal_us"] for o in results]),
            "broken": sum(o["run"]["statuses"].get("-1", 0) for o in results),
            "5xx": sum(
                n for o in results for c, n in o["run"]["statuses"].items() if int(c) >= 500
            ),
        }
    return out


def _f(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def render(found: dict[str, Any]) -> str:
    """The markdown table of the summary (medians over the rounds)."""
    lines = [
        f"    {found['command']}",
        "",
        f"{found['model']}; {len(next(iter(found['rounds'].values())))} rounds; load average "
        f"before {found['load_before'][0]:.2f}, after {found['load_after'][0]:.2f}; medians "
        "over the rounds.",
        "",
        "| path | capacity /s | goodput / capacity (each round) | 429s | 429 p50 from send "
        "| admitted p99 from send (from schedule) | budget | goodput / capacity per CPU s "
        "| server CPU per answer / per refusal |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    cost = found.get("refusal_cost")
    for mode, s in found["summary"].items():
        each = ", ".join(_f(v, 2) for v in s["goodput_ratios"])
        lines.append(
            f"| {mode} | {_f(s['capacity_per_s'])} | **{_f(s['goodput_ratio'], 2)}** ({each}) "
            f"| {_f(s['refused'])} | {_f(s['refused_p50_ms'], 1)} ms "
            f"| {_f(s['admitted_p99_ms'], 1)} ms ({_f(s['admitted_p99_from_schedule_ms'], 1)} ms) "
            f"| {_f(s['budget_ms'])} ms | {_f(s['goodput_ratio_per_cpu_s'], 2)} "
            f"| {_f(s['cpu_us_per_answer'])} / {_f(s['cpu_us_per_refusal'])} us |"
        )
    if cost:
        lines += [
            "",
            "| path | event loop CPU per refused request (alone) | 429 share | requests/s |",
        ]
        lines.append("|---|---|---|---|")
        for mode, c in cost.items():
            lines.append(
                f"| {mode} | {_f(c['per_request_us'])} us | {c['refused_share']:.1%} "
                f"| {_f(c['requests_per_s'])} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of (old, new)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds at 2x capacity")
    parser.add_argument("--threads", type=int, default=1, help="edgeloop's intra-op threads")
    parser.add_argument("--dense", type=int, default=256, help="the CNN's dense width (4096)")
    parser.add_argument("--out", type=Path, default=Path("bench"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="overload-bench-") as tmp:
        found = compare(Path(tmp), args.rounds, args.duration, args.threads, args.dense)
        sb.log("the cost of a refusal, each path alone")
        found["refusal_cost"] = refusal_cost(Path(tmp), args.duration / 2, args.threads)
    found["command"] = " ".join([Path(sys.executable).name, *sys.argv])
    found["machine"] = sb.machine()
    found["load_before"], found["load_after"] = load_before, os.getloadavg()
    out = args.out / "serve_bench_overload_compare.json"
    out.write_text(json.dumps(found, indent=2) + "\n")
    print(render(found))


if __name__ == "__main__":
    main()
