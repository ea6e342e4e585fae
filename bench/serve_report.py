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


def render(r: dict[str, Any], overhead: list[dict[str, Any]] | None = None) -> str:
    """The section; ``overhead``: results of ``serve_bench.py --overhead-only`` runs, whose
    interleaved figure (median over the runs) then judges the batch-1 overhead goals."""
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
    lines += _goal_rows(f, r, overhead or [])
    lines += _interleaved(overhead or [])
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
    e, t, f, m = r["edgeloop"], r["edgeloop_threaded"], r["figures"], r["machine"]
    cpu = e["closed_oip_binary"].get("server_cpu_us_per_query")
    busy = "(not measured)" if cpu is None else f"{cpu['event_loop_busy_share']:.0%}"
    inline_p50 = e["single_oip_binary"]["latency_ms"]["p50"]
    hop_p50 = t["single_oip_binary"]["latency_ms"]["p50"]
    return [
        "### Reading the figures, and what was tried",
        "",
        f"- Overhead. A fast unbatched model runs on the event loop itself (below "
        f"`--inline-below-ms`, default 1 ms of self-test time): handing a request to a worker "
        f"thread and back costs two thread wake-ups, which on this VM cost more than the "
        f"inference. In this run: OIP binary p50 {inline_p50:.3f} ms inline vs {hop_p50:.3f} ms "
        "through the worker thread (`--inline-below-ms 0`). An admitted inference request goes "
        "from the front door straight to its handler (no framework routing or exception "
        "layers) and uvicorn does not rewrite proxy headers; the rest of the overhead is "
        "uvicorn's HTTP parsing and socket writes, the protocol codec, validation (one-pass "
        "finiteness check), metrics, and the inference itself running slower between requests "
        "than in a warm tight loop. Single-stream p50s taken minutes apart on this shared "
        f"machine move by 100 us or more, so the goal is judged on the interleaved measurement "
        f"below; this run's sequential figure: {f['overhead_binary_us']:.0f} us.",
        *_batching_note(r),
        "- Overload. Admission is by queue delay (`--max-queue-delay-ms`, 1000 ms by default) as "
        "well as by count (`--max-queue`, 64); see docs/serving.md. Each request is stamped "
        "when the server parses its first byte; the front door (the app's first middleware, "
        "for the inference routes) answers one that already waited too long with 429 and "
        "`Retry-After` before routing it or reading its body, the same check runs again before "
        "a model's queue, and a model's gate refuses one whose estimated wait (requests in "
        "flight x measured engine time) is over the budget: all `queue_delay`. The bound is "
        "CoDel-style: the full budget for bursts, a quarter of it while a queue stands. New "
        "connections are accepted in batches: libuv under uvloop accepts one connection per "
        "loop iteration, and at 2x capacity the accept queue held 250-450 connections whose "
        "first requests were answered up to 6-8 s late; that, not the model queue, was the "
        "earlier unbounded p99 (7.9 s). What the server cannot bound: time its process is not "
        f"scheduled. With other jobs on these 2 CPUs (load average {m['load_before'][0]:.1f} "
        f"before, {r['load_after'][0]:.1f} after), the server's event loop was busy "
        f"{busy} of the wall time in the 16-client runs (unbatched, it is the bottleneck), "
        "and the admitted p99 moves with that from one run to the next. RSS stays flat: "
        "nothing is queued without bound inside the process.",
        "- Method caveats. Runs are seconds long, not MLPerf-compliant (which asks for 600 s and "
        "tens of thousands of queries per scenario); the load generator shares the 2 CPUs with "
        "the server and with other jobs (see the load average), and its own lag is reported.",
        "",
    ]


def _median_overhead(overhead: list[dict[str, Any]], kind: str) -> float:
    values = sorted(run[f"overhead_{kind}_us"]["median"] for run in overhead)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def _interleaved(overhead: list[dict[str, Any]]) -> list[str]:
    if not overhead:
        return []
    lines = [
        "",
        "### Batch-1 overhead over bare `session.run`, interleaved",
        "",
        "Bare `session.run` and one edgeloop server are timed in turns (slices of "
        f"{overhead[0]['per_slice']} single-stream queries per body kind, "
        f"{overhead[0]['slices']} rounds), so load from the other jobs on this shared machine "
        "lands on all of them alike; a run's figure is the median over its rounds of (server "
        "p50 - floor p50). Runs:",
        "",
        f"    {overhead[0]['command']}   (x{len(overhead)}, one after another)",
        "",
        "| run | load avg before | floor p50 (us) | binary (us) | OIP JSON (us) | "
        "/predict JSON (us) |",
        "|---|---|---|---|---|---|",
    ]
    for i, run in enumerate(overhead, 1):
        lines.append(
            f"| {i} | {run['load_before'][0]:.1f} | {run['p50_us']['floor']:.0f} | "
            + " | ".join(
                f"{run[f'overhead_{k}_us']['median']:.0f} "
                f"({run[f'overhead_{k}_us']['p25']:.0f}-{run[f'overhead_{k}_us']['p75']:.0f})"
                for k in ("oip_binary", "oip_json", "predict_json")
            )
            + " |"
        )
    lines.append(
        f"| median of the runs | | | {_median_overhead(overhead, 'oip_binary'):.0f} | "
        f"{_median_overhead(overhead, 'oip_json'):.0f} | "
        f"{_median_overhead(overhead, 'predict_json'):.0f} |"
    )
    lines.append("")
    lines.append("(In brackets: the 25th-75th percentile of a run's per-round differences.)")
    return lines


def _goal_rows(f: dict[str, Any], r: dict[str, Any], overhead: list[dict[str, Any]]) -> list[str]:
    x16 = f["x16_throughput_vs_baseline"]
    best_name, best = max(x16.items(), key=lambda kv: kv[1]["ratio"])
    equal_p99 = best["p99_ms"] <= best["baseline_p99_ms"]
    batching, dense = f["batching_x16"], f["dense_probe"]
    if overhead:
        binary = _median_overhead(overhead, "oip_binary")
        json_us = _median_overhead(overhead, "oip_json")
        predict_us = _median_overhead(overhead, "predict_json")
        how = f"interleaved, median of {len(overhead)} runs; sequential in the full run: "
        how += f"{f['overhead_binary_us']:.0f} us"
    else:
        binary, json_us = f["overhead_binary_us"], f["overhead_json_us"]
        predict_us, how = f["overhead_predict_json_us"], "sequential"
    return [
        f"| overhead over bare `session.run`, batch 1, binary body, p50 <= 300 us | "
        f"{binary:.0f} us ({how}) | {_verdict(binary <= 300)} |",
        f"| overhead, JSON body, p50 <= 1 ms | OIP JSON {json_us:.0f} us; "
        f"/predict JSON {predict_us:.0f} us (baseline, sequential: "
        f"{f['baseline_overhead_us']:.0f} us) | {_verdict(json_us <= 1000)} |",
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


def _batching_note(r: dict[str, Any]) -> list[str]:
    e, b, f = r["edgeloop"], r["edgeloop_batched"], r["figures"]
    text = (
        f"- Batching. The goal needs an engine that gains from batches; the small CNN's bare "
        f"gain at batch 16 is {f['engine_batch16_gain']:.2f}x, and a server adds per-request "
        "HTTP work that batching does not remove, so on this model batching cannot reach 2.5x "
        "(it also loses the inline path)."
    )
    un = e["closed_oip_binary"].get("server_cpu_us_per_query")
    ba = b["closed_oip_binary"].get("server_cpu_us_per_query")
    if un and ba:
        text += (
            f" Where the time goes (server CPU per query, 16 clients): unbatched, the event "
            f"loop spends {un['event_loop']:.0f} us (HTTP and the inline inference); batched, "
            f"{ba['event_loop']:.0f} us on the loop (HTTP, the batcher's hand-offs) plus "
            f"{ba['other_threads']:.0f} us in the engine's worker thread. One event loop "
            f"serving both, batching can at best replace the first by the second: "
            f"{un['event_loop'] / ba['event_loop']:.2f}x if the engine thread had a core of "
            f"its own. The loop was busy {un['event_loop_busy_share']:.0%} / "
            f"{ba['event_loop_busy_share']:.0%} of the time: the rest of the CPU went to the "
            "load generator and to the other jobs on these 2 CPUs."
        )
    text += (
        " On the dense-head CNN, where batch-1 inference is memory-bound, the same batcher "
        f"gives {f['dense_probe']['throughput_ratio']:.2f}x at p99 ratio "
        f"{f['dense_probe']['p99_ratio']:.2f}."
    )
    return [text]


def _overload_row(model: str, o: dict[str, Any]) -> str:
    """Met when excess got 429, nothing else failed, RSS stayed within 10 %, the server lived,
    and the admitted p99 (from send) stayed within the queue delay budget
    (``--max-queue-delay-ms``), the longest wait the server admits (a quarter of it while a
    queue stands).
    """
    run, rss = o["run"], o["run"]["rss_mb"] or {}
    budget = float(o.get("max_queue_delay_ms") or 0.0)
    p99 = run["latency_from_send_ms"]["p99"]
    ok = (
        set(run["statuses"]) <= {"200", "429"}
        and "429" in run["statuses"]
        and o["alive"]
        and bool(rss)
        and rss["last"] <= 1.1 * rss["first"]
        and p99 is not None
        and budget > 0
        and p99 <= budget
    )
    answered = sum(run["statuses"].values())
    share = run["statuses"].get("429", 0) / answered if answered else 0.0
    refused = run.get("refused_from_send_ms", {}).get("p50")
    return (
        f"| 2x capacity, {model}: admitted p99 bounded (<= the queue delay budget, "
        f"{budget:.0f} ms), excess 429, RSS flat, no crash | offered "
        f"{run['offered_rate_per_s']:.0f}/s; {run['statuses']} (429 share {share:.0%}); "
        f"admitted p99 {_ms(p99, 1)} ms from send; 429 p50 {_ms(refused, 1)} ms from send; "
        f"RSS {_ms(rss.get('first'), 1)} -> {_ms(rss.get('last'), 1)} MiB; alive: "
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


def render_overload(runs: list[dict[str, Any]]) -> str:
    """``serve_bench.py --overload-only`` results: the goal rows and the details, per run."""
    lines = []
    for run in runs:
        lines += [
            f"    {run['command']}",
            "",
            f"Load average before {run['load_before'][0]:.2f}, after {run['load_after'][0]:.2f}.",
            "",
            "| goal | measured | verdict |",
            "|---|---|---|",
        ]
        models = [k for k in run if k.endswith("CNN")]
        lines += [_overload_row(k, run[k]) for k in models]
        lines.append("")
        for k in models:
            o, r = run[k], run[k]["run"]
            rss = r["rss_mb"] or {}
            lines.append(
                f"- {k}: capacity {o['capacity_per_s']:.0f}/s (offline), offered "
                f"{r['offered_rate_per_s']:.0f}/s for {r['duration_s']:.1f} s; statuses "
                f"{r['statuses']}; 2xx p50/p99 {_ms(r['latency_from_send_ms']['p50'], 1)}/"
                f"{_ms(r['latency_from_send_ms']['p99'], 1)} ms from send, p99 "
                f"{_ms(r['latency_ms']['p99'], 1)} ms from schedule (client lag p99 "
                f"{_ms(r['client_lag_ms']['p99'], 1)} ms); server-side p99 <= "
                f"{_ms(o.get('server_p99_ms_at_most'), 1)} ms; {_refusals(o)}RSS "
                f"{_ms(rss.get('first'), 1)} -> {_ms(rss.get('last'), 1)} MiB (max "
                f"{_ms(rss.get('max'), 1)}); alive afterwards: {o['alive']}"
            )
        lines.append("")
    return "\n".join(lines)


def _refusals(o: dict[str, Any]) -> str:
    """429s by where they were decided, and how fast they came back (edgeloop runs only)."""
    by = o.get("refused_by_reason")
    refused = o["run"].get("refused_from_send_ms") or {}
    if by is None or refused.get("p50") is None:
        return ""
    reasons = ", ".join(f"{k} {v:.0f}" for k, v in sorted(by.items()))
    return (
        f"refused by reason: {reasons} (budget {o.get('max_queue_delay_ms'):g} ms); 429 p50/p99 "
        f"{_ms(refused['p50'], 1)}/{_ms(refused['p99'], 1)} ms from send; "
    )


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
            f"{_refusals(o)}RSS {_ms(rss.get('first'), 1)} -> {_ms(rss.get('last'), 1)} MiB (max "
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
        f"{_refusals(o)}RSS {_ms(rss.get('first'), 1)} -> {_ms(rss.get('last'), 1)} MiB (max "
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


if __name__ == "__main__":  # serve_report.py OUT/serve_bench_results.json [overhead.json ...]
    runs = [json.loads(Path(p).read_text()) for p in sys.argv[2:]]
    sys.stdout.write(render(json.loads(Path(sys.argv[1]).read_text()), runs or None))
