"""Render bench/serve_bench.py's results as the section of docs/benchmarks.md it fills.

Every number printed comes from the results file; goals are compared here, once.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _ms(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _verdict(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def _row(name: str, run: dict[str, Any]) -> str:
    lat = run["latency_ms"]
    statuses = ", ".join(f"{k}: {v}" for k, v in run["statuses"].items())
    return (
        f"| {name} | {_ms(lat['p50'])} | {_ms(lat['p90'])} | {_ms(lat['p99'])} | "
        f"{run['throughput_per_s']:,.0f} | {statuses} |"
    )


def render(r: dict[str, Any]) -> str:
    f, e, b, c, m = r["figures"], r["edgeloop"], r["edgeloop_batched"], r["baseline"], r["machine"]
    floor = r["floor"]
    lines = [
        "## Inference server (issue 5)",
        "",
        "Command (one run, same model, same machine, all scenarios in sequence):",
        "",
        f"    {r['command']}",
        "",
        f"Machine: {m['cpu']}, {m['cpus']} CPUs shared with other jobs (load average before "
        f"{m['load_before'][0]:.2f}, after {r['load_after'][0]:.2f}), Python {m['python']}, "
        f"onnxruntime {floor['onnxruntime']}. The load generator (bench/loadgen.py, uvloop, raw "
        "HTTP/1.1 keep-alive) runs on the same 2 CPUs as the server, as does the other work, so "
        "every HTTP figure includes that contention; each server met the same conditions in turn.",
        "",
        f"Model: small CNN on 1x3x32x32 (conv 3->16, pool, conv 16->32, pool, dense 2048->256, "
        f"dense 10, softmax; {r['model']['file_bytes']:,} bytes ONNX FP32). edgeloop serve ran "
        f"with `--threads {floor['threads']}`; the baseline with ONNX Runtime's defaults.",
        "",
        "### Goals",
        "",
        "| goal | measured | verdict |",
        "|---|---|---|",
    ]
    lines += _goal_rows(f, r)
    lines += [
        "",
        "### Single-stream (one query at a time; latency in ms)",
        "",
        "| server / body | p50 | p90 | p99 | queries/s | statuses |",
        "|---|---|---|---|---|---|",
        _row("bare `session.run` (floor)", floor["single_stream"]),
        _row("edgeloop OIP binary", e["single_oip_binary"]),
        _row("edgeloop OIP JSON", e["single_oip_json"]),
        _row("edgeloop /predict JSON", e["single_predict_json"]),
        _row("baseline /predict JSON", c["single_predict_json"]),
        _row(
            "edgeloop OIP binary, `--inline-below-ms 0`",
            r["edgeloop_threaded"]["single_oip_binary"],
        ),
        "",
        "### 16 concurrent clients (closed loop; latency in ms)",
        "",
        "| server / body | p50 | p90 | p99 | queries/s | statuses |",
        "|---|---|---|---|---|---|",
        _row("edgeloop OIP binary, unbatched", e["closed_oip_binary"]),
        _row("edgeloop OIP JSON, unbatched", e["closed_oip_json"]),
        _row("edgeloop /predict JSON, unbatched", e["closed_predict_json"]),
        _row("edgeloop OIP binary, batched (16, 2 ms)", b["closed_oip_binary"]),
        _row("edgeloop OIP JSON, batched (16, 2 ms)", b["closed_oip_json"]),
        _row("baseline /predict JSON", c["closed_predict_json"]),
        _row(
            "edgeloop OIP binary, `--inline-below-ms 0`",
            r["edgeloop_threaded"]["closed_oip_binary"],
        ),
        "",
    ]
    lines += _server_and_offline(r)
    lines += _overload_and_swap(r)
    lines += _notes(r)
    return "\n".join(lines) + "\n"


def _notes(r: dict[str, Any]) -> list[str]:
    e, t, f = r["edgeloop"], r["edgeloop_threaded"], r["figures"]
    inline_p50 = e["single_oip_binary"]["latency_ms"]["p50"]
    hop_p50 = t["single_oip_binary"]["latency_ms"]["p50"]
    return [
        "### Reading the figures, and what was tried",
        "",
        f"- Overhead. A fast unbatched model runs on the event loop itself (below "
        f"`--inline-below-ms`, default 1 ms of self-test time): handing a request to a worker "
        f"thread and back costs two thread wake-ups, which on this VM cost more than the "
        f"inference. In this run: OIP binary p50 {inline_p50:.3f} ms inline vs {hop_p50:.3f} ms "
        "through the worker thread (`--inline-below-ms 0`). The rest of the overhead is "
        "uvicorn + FastAPI (FastAPI's per-request OpenTelemetry check is switched off), the "
        "protocol codec, validation (one-pass finiteness check), metrics, and the inference "
        "itself running slower between requests than in a warm tight loop. Tried and dropped "
        "for lack of a measurable change: writing each response's head and body in one socket "
        f"send. Binary goal: {f['overhead_binary_us']:.0f} us against 300 us.",
        f"- Batching. The goal needs an engine that gains from batches; the small CNN's bare "
        f"gain at batch 16 is {f['engine_batch16_gain']:.2f}x, and a server adds per-request "
        "HTTP work that batching does not remove, so on this model batching cannot reach 2.5x "
        "(it also loses the inline path). On the dense-head CNN, where batch-1 inference is "
        f"memory-bound, the same batcher gives {f['dense_probe']['throughput_ratio']:.2f}x at "
        f"p99 ratio {f['dense_probe']['p99_ratio']:.2f}.",
        "- Overload. Admission bounds what the server has admitted (`--max-queue`, 64); a 429 "
        "costs the event loop a parse and an answer, not an inference. When the loop itself is "
        "the bottleneck (the small CNN: a request is mostly HTTP work) 2x its capacity needs more "
        "than one core for the loop alone: the backlog then sits in the kernel's socket buffers, "
        "outside any gate, and the client sees it. When the engine is the bottleneck (the "
        "dense-head CNN) the gate holds the backlog, excess requests get 429 with Retry-After "
        "and the admitted p99 is bounded by the queue limit times the service time. RSS stays "
        "flat in both: nothing is queued without bound inside the process.",
        "- Method caveats. Runs are seconds long, not MLPerf-compliant (which asks for 600 s and "
        "tens of thousands of queries per scenario); the load generator shares the 2 CPUs with "
        "the server and with other jobs (see the load average), and its own lag is reported.",
        "",
    ]


def _goal_rows(f: dict[str, Any], r: dict[str, Any]) -> list[str]:
    x16 = f["x16_throughput_vs_baseline"]
    best_name, best = max(x16.items(), key=lambda kv: kv[1]["ratio"])
    equal_p99 = best["p99_ms"] <= best["baseline_p99_ms"]
    batching, dense = f["batching_x16"], f["dense_probe"]
    return [
        f"| overhead over bare `session.run`, batch 1, binary body, p50 <= 300 us | "
        f"{f['overhead_binary_us']:.0f} us | {_verdict(f['overhead_binary_us'] <= 300)} |",
        f"| overhead, JSON body, p50 <= 1 ms | OIP JSON {f['overhead_json_us']:.0f} us; "
        f"/predict JSON {f['overhead_predict_json_us']:.0f} us (baseline "
        f"{f['baseline_overhead_us']:.0f} us) | {_verdict(f['overhead_json_us'] <= 1000)} |",
        f"| >= 3x the baseline's throughput at equal or better p99, 16 clients | best: "
        f"{best_name} {best['ratio']:.2f}x, p99 {best['p99_ms']:.2f} ms vs baseline "
        f"{best['baseline_p99_ms']:.2f} ms | {_verdict(best['ratio'] >= 3 and equal_p99)} |",
        f"| dynamic batching >= 2.5x unbatched throughput, p99 <= 2x, 16 clients | "
        f"{batching['throughput_ratio']:.2f}x throughput, p99 ratio {batching['p99_ratio']:.2f} | "
        f"{_verdict(batching['throughput_ratio'] >= 2.5 and batching['p99_ratio'] <= 2)} |",
        f"| hot swap during load: 0 failed requests | {f['hot_swap_failed_requests']} failed of "
        f"{r['hot_swap']['load']['queries']} | {_verdict(f['hot_swap_failed_requests'] == 0)} |",
        f"| supplementary: dynamic batching on the dense-head CNN (see below), 16 clients | "
        f"{f['dense_probe']['throughput_ratio']:.2f}x throughput, p99 ratio "
        f"{f['dense_probe']['p99_ratio']:.2f} | "
        f"{_verdict(dense['throughput_ratio'] >= 2.5 and dense['p99_ratio'] <= 2)} |",
        _overload_row("small CNN", r["edgeloop"]["overload"]),
        _overload_row("dense-head CNN", r["dense_probe"]["overload"]),
        f"| `edgeloop serve` idle RSS, one small model, torch not imported | "
        f"{f['idle_rss_mb']:.1f} MiB, torch imported: {f['torch_imported']} | measured |",
    ]


QUEUE_LIMIT = 64  # edgeloop serve's default --max-queue, used by every run here


def _overload_row(model: str, o: dict[str, Any]) -> str:
    """Met when excess got 429, nothing else failed, RSS stayed within 10 %, the server lived,
    and the admitted p99 (from send) stayed within 4x the queue's drain time (limit/capacity).
    """
    run, rss = o["run"], o["run"]["rss_mb"] or {}
    drain_ms = QUEUE_LIMIT / o["capacity_per_s"] * 1000.0
    p99 = run["latency_from_send_ms"]["p99"]
    ok = (
        set(run["statuses"]) <= {"200", "429"}
        and "429" in run["statuses"]
        and o["alive"]
        and bool(rss)
        and rss["last"] <= 1.1 * rss["first"]
        and p99 is not None
        and p99 <= 4 * drain_ms
    )
    return (
        f"| 2x capacity, {model}: admitted p99 bounded (<= 4x limit/capacity = "
        f"{4 * drain_ms:.0f} ms), excess 429, RSS flat, no crash | offered "
        f"{run['offered_rate_per_s']:.0f}/s; {run['statuses']}; admitted p99 {_ms(p99, 1)} ms "
        f"from send; RSS {_ms(rss.get('first'), 1)} -> {_ms(rss.get('last'), 1)} MiB; alive: "
        f"{o['alive']} | {_verdict(ok)} |"
    )


def _server_and_offline(r: dict[str, Any]) -> list[str]:
    lines = [
        f"### Server scenario (Poisson arrivals; highest rate with p99 <= "
        f"{r['edgeloop']['server_oip_binary']['bound_ms']:g} ms and >= 99 % answered 2xx)",
        "",
        "| server / body | best rate (queries/s) | p99 at it (ms) | rates tried (p99 ms) |",
        "|---|---|---|---|",
    ]
    for name, run in (
        ("edgeloop OIP binary, unbatched", r["edgeloop"]["server_oip_binary"]),
        ("edgeloop OIP binary, batched", r["edgeloop_batched"]["server_oip_binary"]),
        ("baseline /predict JSON", r["baseline"]["server_predict_json"]),
    ):
        best = run["best"]
        tried = "; ".join(f"{t['rate']:.0f} ({_ms(t['p99_ms'], 1)})" for t in run["tried"])
        rate = "none met the bound" if best is None else f"{best['offered_rate_per_s']:,.0f}"
        p99 = "n/a" if best is None else _ms(best["latency_ms"]["p99"], 2)
        lines.append(f"| {name} | {rate} | {p99} | {tried} |")
    floor = r["floor"]
    lines += [
        "",
        "### Offline (all queries available; 64 in flight over HTTP)",
        "",
        "| server / body | queries | throughput (queries/s) |",
        "|---|---|---|",
        f"| bare `session.run`, batch 1 | - | {floor['offline_batch1_per_s']:,.0f} |",
        f"| bare `session.run`, batch 16 | - | {floor['offline_batch16_per_s']:,.0f} samples/s |",
    ]
    for name, run in (
        ("edgeloop OIP binary, unbatched", r["edgeloop"]["offline_oip_binary"]),
        ("edgeloop OIP binary, batched", r["edgeloop_batched"]["offline_oip_binary"]),
        ("baseline /predict JSON", r["baseline"]["offline_predict_json"]),
    ):
        lines.append(f"| {name} | {run['queries']:,} | {run['throughput_per_s']:,.0f} |")
    return [*lines, ""]


def _overload_and_swap(r: dict[str, Any]) -> list[str]:
    lines = [
        "### Overload at 2x capacity, batching on an engine-bound model, hot swap",
        "",
        "Capacity is a server's offline throughput; overload is Poisson arrivals at twice it.",
        "",
    ]
    for name, o in (("edgeloop OIP binary", r["edgeloop"]["overload"]),
                    ("baseline /predict JSON", r["baseline"]["overload"])):  # fmt: skip
        run, rss = o["run"], o["run"]["rss_mb"] or {}
        lines.append(
            f"- {name}: capacity {o['capacity_per_s']:.0f}/s, offered "
            f"{run['offered_rate_per_s']:.0f}/s for {run['duration_s']:.1f} s; statuses "
            f"{run['statuses']}; 2xx p50/p99 {_ms(run['latency_ms']['p50'], 1)}/"
            f"{_ms(run['latency_ms']['p99'], 1)} ms from schedule, p99 "
            f"{_ms(run['latency_from_send_ms']['p99'], 1)} ms from send; client lag p99 "
            f"{_ms(run['client_lag_ms']['p99'], 1)} ms; Retry-After values {run['retry_after']}; "
            f"RSS {_ms(rss.get('first'), 1)} -> {_ms(rss.get('last'), 1)} MiB (max "
            f"{_ms(rss.get('max'), 1)}); alive afterwards: {o['alive']}"
        )
    probe, pf = r["dense_probe"], r["figures"]["dense_probe"]
    lines += [
        f"- dynamic batching needs an engine that gains from batches. Measured in this run: bare "
        f"`session.run` of the small CNN does {r['figures']['engine_batch16_gain']:.2f}x the "
        f"samples/s at batch 16 as at batch 1, which caps any server's batching gain below that. "
        f"The same CNN with a 4096-wide dense layer ({probe['file_bytes']:,} bytes; batch-1 "
        f"inference is a memory-bound matrix-vector product) gains "
        f"{pf['engine_batch16_gain']:.2f}x in bare `session.run`; served with 16 clients, "
        f"batched ({_ms(probe['batched']['throughput_per_s'], 0)}/s, p99 "
        f"{_ms(probe['batched']['latency_ms']['p99'], 1)} ms) vs unbatched "
        f"({_ms(probe['unbatched']['throughput_per_s'], 0)}/s, p99 "
        f"{_ms(probe['unbatched']['latency_ms']['p99'], 1)} ms): "
        f"{pf['throughput_ratio']:.2f}x throughput, p99 ratio {pf['p99_ratio']:.2f}.",
    ]
    o = probe["overload"]
    run, rss = o["run"], o["run"]["rss_mb"] or {}
    lines.append(
        f"- overload where the engine is the limit (the dense-head CNN, unbatched, capacity "
        f"{o['capacity_per_s']:.0f}/s offline): offered {run['offered_rate_per_s']:.0f}/s for "
        f"{run['duration_s']:.1f} s; statuses {run['statuses']}; 2xx p99 "
        f"{_ms(run['latency_ms']['p99'], 1)} ms from schedule, "
        f"{_ms(run['latency_from_send_ms']['p99'], 1)} ms from send, server-side <= "
        f"{_ms(o.get('server_p99_ms_at_most'), 1)} ms; Retry-After values {run['retry_after']}; "
        f"RSS {_ms(rss.get('first'), 1)} -> {_ms(rss.get('last'), 1)} MiB (max "
        f"{_ms(rss.get('max'), 1)}); alive afterwards: {o['alive']}"
    )
    swap = r["hot_swap"]
    steps = "; ".join(
        f"{s['step']}: HTTP {s['status']} in {s['load_ms']:.0f} ms" for s in swap["swaps"]
    )
    lines += [
        f"- hot swap: 8 clients, {swap['load']['queries']} queries, statuses "
        f"{swap['load']['statuses']}; {steps}; 200s by version {swap['by_version']}",
        "",
    ]
    return lines


if __name__ == "__main__":  # re-render a results file: serve_report.py OUT/serve_bench.json
    sys.stdout.write(render(json.loads(Path(sys.argv[1]).read_text())))
