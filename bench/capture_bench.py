"""What capture costs the serving path: ``edgeloop serve`` with and without a capture policy,
side by side, in one run (issue 13 part 1's goal: at most 5 % of throughput).

    .venv/bin/python bench/capture_bench.py [--rounds 4] [--duration 5] [--out bench]

Two servers of the same model (bench/serve_bench.py's CNN on 1x3x32x32 inputs, 10 classes,
softmax; ``--threads 1``) run at once: one without capture, one with
``--capture uncertain:T,drift,random:0.01`` writing its JSON Lines file to a temporary folder.
Both get the same stream: 64 distinct inputs, each of 16 closed-loop clients cycling through
them; ``T`` is the 10th percentile of the model's top-1 probability over those inputs, so about
one input in ten is uncertain (the random share adds 1 %). The model has no reference profile,
so ``drift`` never holds: every request still pays for the decision. The byte cap is set high
enough (2 GiB) never to bind, so every kept row is encoded and written for the whole run.

They are loaded at the same time, each by its own 16 clients in one load generator: ``rounds``
rounds, each one closed-loop run of ``duration`` seconds per body kind (Open Inference Protocol
binary and ``/predict`` JSON). On a shared machine (other jobs' load moves from second to
second) timing the two in turns gave per-round ratios from 0.3 to 4.9 (a first version of this
script); loaded at once, both meet the same load at every instant and share the CPUs under the
same scheduler, so the throughput ratio is what capture's extra CPU per request costs. A figure
is the median over rounds; the ratio is capture-on over capture-off throughput per round, its
median and spread given, beside the server CPU time per answered request. Rows kept are
counted from the file the server wrote (its lines) against the requests it answered.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
import loadgen
from loadgen import AsyncConnection, Query, Run
from serve_bench import MODEL_NAME, Server, build_cnn, machine, running, start_edgeloop

CLIENTS = 16
INPUTS = 64
RANDOM_SHARE = 0.01
CAP_BYTES = 2 << 30


def stream(address: tuple[str, int], xs: np.ndarray, kind: str) -> list[Query]:
    """One prebuilt query per input (each with its own request id)."""
    out = []
    for i, x in enumerate(xs):
        one = x[None]
        if kind == "predict_json":
            body = orjson.dumps({"features": one.ravel().tolist(), "request_id": f"q{i}"})
            out.append(Query.post(address, "/predict", body, {"Content-Type": "application/json"}))
            continue
        header = orjson.dumps(
            {
                "id": f"q{i}",
                "inputs": [{"name": "input", "shape": list(one.shape), "datatype": "FP32",
                            "parameters": {"binary_data_size": one.nbytes}}],
                "outputs": [{"name": "output", "parameters": {"binary_data": True}}],
            }
        )  # fmt: skip
        headers = {
            "Inference-Header-Content-Length": str(len(header)),
            "Content-Type": "application/octet-stream",
        }
        infer = f"/v2/models/{MODEL_NAME}/infer"
        out.append(Query.post(address, infer, header + one.astype("<f4").tobytes(), headers))
    return out


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system, every thread, living or ended) of process ``pid``."""
    user, system = cpu_parts(pid)
    return user + system


def cpu_parts(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of process ``pid``, every thread, living or ended."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


async def closed_mixed(
    server: Server, queries: list[Query], duration_s: float, warmup_s: float = 1.0
) -> tuple[Run, int, tuple[float, float]]:
    """``CLIENTS`` closed-loop clients, client ``c`` cycling through ``queries`` from ``c``;
    the run over ``duration_s`` after ``warmup_s``, every request sent (warm-up too), and the
    server's CPU seconds over the timed part."""
    address, pid = server.address, int(server.info["pid"])
    conns = [await AsyncConnection.open(address) for _ in range(CLIENTS)]
    run = Run(f"closed-loop x{CLIENTS}, {len(queries)} inputs")
    measuring = False
    sent_total = 0
    stop_at = time.perf_counter() + warmup_s + duration_s

    async def client(c: int, conn: AsyncConnection) -> None:
        nonlocal sent_total
        i = c
        while (sent := time.perf_counter()) < stop_at:
            status, _, retry = await conn.send(queries[i % len(queries)])
            sent_total += 1
            i += 1
            if measuring:
                loadgen._record(run, status, retry, time.perf_counter() - sent)

    tasks = [asyncio.ensure_future(client(c, conn)) for c, conn in enumerate(conns)]
    await asyncio.sleep(warmup_s)
    measuring, start, cpu_before = True, time.perf_counter(), cpu_parts(pid)
    await asyncio.gather(*tasks)
    run.duration_s = time.perf_counter() - start
    cpu_after = cpu_parts(pid)
    used = (cpu_after[0] - cpu_before[0], cpu_after[1] - cpu_before[1])
    for conn in conns:
        conn.close()
    return run, sent_total, used


async def both(
    servers: dict[str, Server], xs: np.ndarray, kind: str, duration: float
) -> dict[str, tuple[Run, int, tuple[float, float]]]:
    """The two servers loaded at the same time, each by its own clients (module docstring)."""
    names = list(servers)
    runs = await asyncio.gather(
        *(closed_mixed(servers[n], stream(servers[n].address, xs, kind), duration) for n in names)
    )
    return dict(zip(names, runs, strict=True))


def top1(model: Path, xs: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"input": xs})[0]).max(axis=1)


def in_process(
    model: Path, xs: np.ndarray, policy: str, workdir: Path, passes: int = 40
) -> dict[str, Any]:
    """The capture path alone, in this process: ``Capturer.observe`` over the stream's 64
    inputs with their real outputs (on the event loop in a server), then the encoding and JSON
    Lines write of what it kept (a worker thread's); each the fastest of ``passes`` passes (the
    cost on an idle CPU: other jobs only ever add to it), per request."""
    import onnxruntime as ort

    from edgeloop.serving.capture import CaptureSpec
    from edgeloop.serving.capture_files import CaptureFile
    from edgeloop.serving.capture_sink import Capturer

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    outs = [{"output": np.asarray(session.run(None, {"input": x[None]})[0])} for x in xs]
    feeds = [{"input": x[None]} for x in xs]
    spec = CaptureSpec.parse(policy, max_bytes=CAP_BYTES << 8)
    sink = CaptureFile(workdir / "in_process.jsonl")

    def on_loop() -> Capturer:
        capturer = Capturer()
        capturer.sinks.append(sink)
        for i, (f, o) in enumerate(zip(feeds, outs, strict=True)):
            capturer.observe(spec, MODEL_NAME, "1", f"q{i}", f, o)
        return capturer

    loop_s, write_s = [], []
    for _ in range(passes):
        started = time.perf_counter()
        capturer = on_loop()
        loop_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        sink.close()  # what the worker thread does: encode the kept rows, write the lines
        write_s.append(time.perf_counter() - started)
    n = len(xs)
    return {
        "capture_us_per_request": (min(loop_s) + min(write_s)) / n * 1e6,
        "on_event_loop_us_per_request": min(loop_s) / n * 1e6,
        "encode_and_write_us_per_request": min(write_s) / n * 1e6,
        "kept_of_64": capturer.status()[f"{MODEL_NAME}:1"]["kept"],
        "passes": passes,
    }


def measure(
    workdir: Path,
    rounds: int,
    duration: float,
    threads: int,
    aa: bool = False,
    policy_text: str | None = None,
) -> dict[str, Any]:
    model = build_cnn(workdir / f"{MODEL_NAME}.onnx")
    xs = np.random.default_rng(1).standard_normal((INPUTS, 3, 32, 32)).astype(np.float32)
    threshold = float(np.percentile(top1(model, xs), 10))
    policy = policy_text or f"uncertain:{threshold:.6f},drift,random:{RANDOM_SHARE}"
    captures = workdir / "captures.jsonl"
    base = ("--threads", str(threads))
    off = start_edgeloop("off", model, *base)
    flags = ("--capture", policy, "--capture-max-bytes", str(CAP_BYTES))
    if aa:  # the control: the "on" server without capture, to see the two positions' bias
        flags = ()
    on = start_edgeloop("on", model, *base, *flags, "--capture-out", str(captures))
    kinds = ("oip_binary", "predict_json")
    per: dict[str, dict[str, list[dict[str, Any]]]] = {k: {"off": [], "on": []} for k in kinds}
    sent_on = 0
    try:
        servers: dict[str, Server] = {"off": off, "on": on}
        for _ in range(rounds):
            for kind in kinds:
                runs = loadgen.run_async(both(servers, xs, kind, duration))
                for name, (run, sent, used) in runs.items():
                    summary = run.summary()
                    ok = max(1, summary["ok"])
                    summary["server_cpu_ms_per_request"] = sum(used) * 1000.0 / ok
                    summary["server_sys_ms_per_request"] = used[1] * 1000.0 / ok
                    per[kind][name].append(summary)
                    if name == "on":
                        sent_on += sent
        time.sleep(2.0)  # the file is written about once a second
    finally:
        for server in (off, on):
            with running(server):
                pass
    lines = captures.read_text().splitlines() if captures.exists() else []
    records = [json.loads(line) for line in lines]
    reasons: dict[str, int] = {}
    for rec in records:
        for reason in rec["reasons"]:
            reasons[reason] = reasons.get(reason, 0) + 1
    alone = in_process(model, xs, policy, workdir)
    off_cpu_us = float(np.median([v["server_cpu_ms_per_request"]["off"]
                                  for v in map(summarise, per.values())])) * 1000.0  # fmt: skip
    return {
        "in_process": alone,
        # capture's own CPU per request over the off server's CPU per request in the load run
        # (inflated by the shared machine, so this share is a lower bound's companion: see docs)
        "capture_share_of_server_cpu": alone["capture_us_per_request"] / off_cpu_us,
        "policy": policy,
        "threshold_top1_p10": threshold,
        "capture_max_bytes": CAP_BYTES,
        "kinds": {k: summarise(v) for k, v in per.items()},
        "kept_rows": len(records),
        "kept_bytes": captures.stat().st_size if captures.exists() else 0,
        "kept_by_reason": reasons,
        "requests_to_capture_server": sent_on,
        "kept_share": len(records) / sent_on if sent_on else None,
    }


def summarise(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    tput = {name: [r["throughput_per_s"] for r in rs] for name, rs in runs.items()}
    ratios = [a / b for a, b in zip(tput["on"], tput["off"], strict=True)]
    p50 = {name: [r["latency_ms"]["p50"] for r in rs] for name, rs in runs.items()}
    p99 = {name: [r["latency_ms"]["p99"] for r in rs] for name, rs in runs.items()}
    statuses = {name: [r["statuses"] for r in rs] for name, rs in runs.items()}
    cpu = {name: [r["server_cpu_ms_per_request"] for r in rs] for name, rs in runs.items()}
    sys_cpu = {name: [r["server_sys_ms_per_request"] for r in rs] for name, rs in runs.items()}
    cpu_ratios = [b / a for a, b in zip(cpu["on"], cpu["off"], strict=True)]
    return {
        "server_cpu_ms_per_request": {k: float(np.median(v)) for k, v in cpu.items()},
        # of which in the kernel (system time): writes, page faults, sockets
        "server_sys_ms_per_request": {k: float(np.median(v)) for k, v in sys_cpu.items()},
        # CPU per request off/on: the throughput ratio a server bound by its own CPU would
        # show (less sensitive to other jobs on a shared machine than throughput is)
        "cpu_ratio_off_on": {
            "median": float(np.median(cpu_ratios)),
            "min": float(np.min(cpu_ratios)),
            "max": float(np.max(cpu_ratios)),
        },
        "throughput_per_s": {k: float(np.median(v)) for k, v in tput.items()},
        "throughput_rounds": tput,
        "ratio_on_off": {
            "median": float(np.median(ratios)),
            "min": float(np.min(ratios)),
            "max": float(np.max(ratios)),
            "rounds": ratios,
        },
        "p50_ms": {k: float(np.median(v)) for k, v in p50.items()},
        "p99_ms": {k: float(np.median(v)) for k, v in p99.items()},
        "statuses": statuses,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per timed run")
    parser.add_argument("--threads", type=int, default=1, help="edgeloop's intra-op threads")
    parser.add_argument("--out", type=Path, default=Path("bench"))
    parser.add_argument(
        "--aa", action="store_true", help="control run: neither server captures (A/A)"
    )
    parser.add_argument("--policy", help="another capture policy (default: see the docstring)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="capture-bench-") as tmp:
        found = measure(Path(tmp), args.rounds, args.duration, args.threads, args.aa, args.policy)
    found["aa_control"] = args.aa
    found["command"] = " ".join([Path(sys.executable).name, *sys.argv])
    found["machine"] = machine()
    found["load_before"], found["load_after"] = load_before, os.getloadavg()
    (args.out / "capture_bench.json").write_text(json.dumps(found, indent=2) + "\n")
    print(json.dumps(found, indent=2))


if __name__ == "__main__":
    main()
