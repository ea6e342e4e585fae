"""Issue 5's server benchmarks: edgeloop serve vs bare ``session.run`` vs a plain FastAPI server.

    .venv/bin/python bench/serve_bench.py [--duration 10] [--threads 1] [--out bench]

One run, one model, one machine, in this order:

1. the floor: bare ``session.run`` on the same model, single-stream and offline;
2. ``edgeloop serve`` unbatched (``--max-batch 1``): single-stream with ``/predict`` JSON, Open
   Inference Protocol JSON and OIP binary bodies; 16 concurrent clients (closed loop); the
   server scenario (highest Poisson rate whose p99 stays under ``--bound-ms``); offline;
3. ``edgeloop serve`` with dynamic batching (``--max-batch 16 --max-delay-ms 2``): the same
   closed loop, server scenario and offline, binary bodies;
4. the baseline (bench/baseline_server.py): single-stream, closed loop, server scenario, offline,
   with the JSON list body such servers take;
5. hot swap: three model loads while 8 clients keep sending; every answer's status counted;
6. overload: Poisson arrivals at 2x the measured capacity (the offline throughput), the server's
   RSS sampled every 0.25 s; the baseline is put through the same, for contrast;
7. dynamic batching once more on the same CNN with a 4096-wide dense layer, whose batch-1
   inference is memory-bound (the case batching exists for), unbatched vs batched.

The model is a small CNN on 1x3x32x32 inputs (conv 3->16, pool, conv 16->32, pool, dense 256,
dense 10, softmax; 0.54 M parameters, weights from a seeded generator: model content, not a
figure). Every figure comes from this run; results go to ``OUT/serve_bench_results.json`` and
the markdown section to ``OUT/serve_bench_results.md`` (pasted into docs/benchmarks.md). The
machine is shared and small: the load average before and after is recorded beside the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
import loadgen
from loadgen import AsyncConnection, Query

MODEL_NAME = "cnn"
CLIENTS = 16
WARMUP_S = 1.0  # closed loop: untimed first second


def build_cnn(path: Path, seed: int = 0, dense: int = 256) -> Path:
    """conv3x3(3->16) relu pool2, conv3x3(16->32) relu pool2, dense 2048->``dense`` relu, 10."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)  # model weights, not a measured figure

    def param(name: str, *shape: int) -> Any:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 2 else shape[0]
        return numpy_helper.from_array(
            (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32), name
        )

    zeros = [
        numpy_helper.from_array(np.zeros(n, np.float32), name)
        for n, name in ((16, "b1"), (32, "b2"), (dense, "b3"), (10, "b4"))
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("MaxPool", ["r2"], ["p2"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p2"], ["f"]),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["h"]),
        helper.make_node("Relu", ["h"], ["hr"]),
        helper.make_node("Gemm", ["hr", "w4", "b4"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["output"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 32, 32])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 10])],
        initializer=[
            param("w1", 16, 3, 3, 3),
            param("w2", 32, 16, 3, 3),
            param("w3", 2048, dense),
            param("w4", dense, 10),
            *zeros,
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    onnx.save(model, str(tmp))
    return tmp.replace(path)


# -- servers --------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[str]
    address: tuple[str, int]
    info: dict[str, Any]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_edgeloop(name: str, model: Path, *flags: str) -> Server:
    cmd = [sys.executable, "-m", "edgeloop.cli.serve", str(model), "--port", "0"]
    proc = subprocess.Popen([*cmd, "--format", "json", *flags], stdout=subprocess.PIPE, text=True)
    text = ""
    assert proc.stdout is not None
    while proc.poll() is None:
        text += proc.stdout.readline()
        try:
            info = json.loads(text)
            break
        except json.JSONDecodeError:
            continue
    else:
        raise RuntimeError(f"edgeloop serve {flags} did not start")
    host, port = info["url"].removeprefix("http://").rsplit(":", 1)
    return Server(name, proc, (host, int(port)), info)


def start_baseline(model: Path) -> Server:
    port = _free_port()
    script = Path(__file__).resolve().parent / "baseline_server.py"
    proc = subprocess.Popen([sys.executable, str(script), str(model), str(port)], text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return Server("baseline", proc, ("127.0.0.1", port), {"pid": proc.pid})
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the baseline server did not start")


@contextmanager
def running(server: Server) -> Iterator[Server]:
    try:
        yield server
    finally:
        server.proc.terminate()
        try:
            server.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.proc.kill()


def queries(address: tuple[str, int], x: np.ndarray) -> dict[str, Query]:
    """The three bodies: /predict JSON, OIP JSON, OIP binary (binary output asked for)."""
    flat = x.ravel().tolist()
    oip_json = {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                            "data": flat}]}  # fmt: skip
    header = orjson.dumps(
        {
            "inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                        "parameters": {"binary_data_size": x.nbytes}}],
            "outputs": [{"name": "output", "parameters": {"binary_data": True}}],
        }
    )  # fmt: skip
    json_type = {"Content-Type": "application/json"}
    binary_type = {
        "Inference-Header-Content-Length": str(len(header)),
        "Content-Type": "application/octet-stream",
    }
    infer = f"/v2/models/{MODEL_NAME}/infer"
    predict = orjson.dumps({"features": flat})
    return {
        "predict_json": Query.post(address, "/predict", predict, json_type),
        "oip_json": Query.post(address, infer, orjson.dumps(oip_json), json_type),
        "oip_binary": Query.post(address, infer, header + x.astype("<f4").tobytes(), binary_type),
    }


# -- scenarios ------------------------------------------------------------------------------


def floor(model: Path, threads: int, duration: float) -> dict[str, Any]:
    """Bare ``session.run``: single-stream at batch 1, offline throughput at batch 1 and 16."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    x1 = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32)
    x16 = np.random.default_rng(2).standard_normal((16, 3, 32, 32)).astype(np.float32)
    single = loadgen.single_stream_local(lambda: session.run(None, {"input": x1}), duration)
    batch16 = loadgen.single_stream_local(lambda: session.run(None, {"input": x16}), duration / 2)
    return {
        "single_stream": single.summary(),
        "offline_batch1_per_s": single.summary()["throughput_per_s"],
        "offline_batch16_per_s": 16 * batch16.summary()["throughput_per_s"],
        "threads": threads,
        "onnxruntime": ort.__version__,
    }


def overhead_interleaved(
    model: Path, x: np.ndarray, threads: int, slices: int, per_slice: int
) -> dict[str, Any]:
    """Batch-1 overhead over bare ``session.run``, robust to a shared machine's load.

    Bare ``session.run`` and one edgeloop server per body kind run side by side and are timed
    in turns: ``slices`` rounds, each ``per_slice`` single-stream queries on each in turn, so
    a burst of load from other jobs lands on all of them alike. A figure is the median of its
    rounds' p50s; the overhead is that minus the floor's, and the spread of the per-round
    differences is given.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    servers = [start_edgeloop("overhead", model, "--threads", str(threads))]
    try:
        address = servers[0].address
        q = queries(address, x)
        kinds = ("oip_binary", "oip_json", "predict_json")
        conns = {k: loadgen.BlockingConnection(address) for k in kinds}
        rounds: dict[str, list[float]] = {k: [] for k in ("floor", *kinds)}
        statuses: dict[str, dict[int, int]] = {k: {} for k in kinds}
        for k in kinds:  # warm-up
            for _ in range(200):
                conns[k].send(q[k])
        for _ in range(slices):
            floor_run = loadgen.single_stream_local(
                lambda: session.run(None, {"input": x}), 3600, warmup=0, limit=per_slice
            )
            rounds["floor"].append(float(np.percentile(floor_run.latencies, 50)))
            for k in kinds:
                times = []
                for _ in range(per_slice):
                    started = time.perf_counter()
                    status, _ = conns[k].send(q[k])
                    if status == 200:  # any other is counted (a 429 after a stall, say)
                        times.append(time.perf_counter() - started)
                    statuses[k][status] = statuses[k].get(status, 0) + 1
                rounds[k].append(float(np.percentile(times, 50)))
        for conn in conns.values():
            conn.close()
    finally:
        for server in servers:
            with running(server):
                pass
    us = {k: [v * 1e6 for v in vals] for k, vals in rounds.items()}
    result: dict[str, Any] = {
        "slices": slices,
        "per_slice": per_slice,
        "p50_us": {k: float(np.median(v)) for k, v in us.items()},
        "statuses": {k: {str(c): n for c, n in v.items()} for k, v in statuses.items()},
    }
    for k in ("oip_binary", "oip_json", "predict_json"):
        diffs = [a - b for a, b in zip(us[k], us["floor"], strict=True)]
        result[f"overhead_{k}_us"] = {
            "median": float(np.median(diffs)),
            "p25": float(np.percentile(diffs, 25)),
            "p75": float(np.percentile(diffs, 75)),
        }
    return result


def server_scenario(
    address: tuple[str, int], query: Query, capacity: float, bound_ms: float, step_s: float
) -> dict[str, Any]:
    """Bisect the Poisson rate between 0.25x and 1.25x ``capacity`` for p99 <= ``bound_ms``."""
    low, high, best, tried = 0.25 * capacity, 1.25 * capacity, None, []
    for _ in range(5):
        rate = (low + high) / 2
        run = loadgen.run_async(loadgen.poisson(address, query, rate, step_s, seed=len(tried)))
        summary = run.summary()
        p99 = summary["latency_ms"]["p99"]
        ok_share = summary["ok"] / max(1, summary["queries"])
        passed = p99 is not None and p99 <= bound_ms and ok_share >= 0.99
        tried.append({"rate": rate, "p99_ms": p99, "ok_share": ok_share, "passed": passed})
        if passed:
            best, low = summary, rate
        else:
            high = rate
    return {"bound_ms": bound_ms, "best": best, "tried": tried}


def offline_http(address: tuple[str, int], query: Query, capacity: float) -> dict[str, Any]:
    total = max(2000, int(capacity * 8))  # ~8 s of work at the measured capacity
    return loadgen.run_async(loadgen.offline(address, query, total, in_flight=64)).summary()


def closed(
    address: tuple[str, int], query: Query, duration: float, pid: int | None = None
) -> dict[str, Any]:
    """16 clients, closed loop; with ``pid``, the server's CPU time per answered query too:
    its event-loop thread (the process's main thread) and its other threads (the engine)."""
    before: dict[int, float] = {}
    if pid:  # read when the warm-up second ends and the measured run starts
        timer = threading.Timer(WARMUP_S, lambda: before.update(_cpu_by_thread(pid)))
        timer.start()
    summary: dict[str, Any] = loadgen.run_async(
        loadgen.closed_loop(address, query, CLIENTS, duration, warmup_s=WARMUP_S)
    ).summary()
    if pid:
        timer.join()
        wall = summary["duration_s"]
        after = _cpu_by_thread(pid)
        used = {t: after[t] - before.get(t, 0.0) for t in after}
        loop_s = used.get(pid, 0.0)
        other_s = sum(v for t, v in used.items() if t != pid)
        n = max(1, summary["queries"])
        summary["server_cpu_us_per_query"] = {
            "event_loop": loop_s / n * 1e6,
            "other_threads": other_s / n * 1e6,
            "event_loop_busy_share": loop_s / wall,
        }
    return summary


def _cpu_by_thread(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of each thread of process ``pid``, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    found: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        found[int(task.name)] = (int(fields[11]) + int(fields[12])) / tick
    return found


async def _post(address: tuple[str, int], path: str) -> tuple[int, Any]:
    conn = await AsyncConnection.open(address)
    try:
        status, body, _ = await conn.send(Query.post(address, path, b"", {}))
    finally:
        conn.close()
    return status, orjson.loads(body) if body else None


def hot_swap(workdir: Path, duration: float, threads: int) -> dict[str, Any]:
    """Three loads during 8-client load: a new version, the same version changed, another."""
    repo = workdir / "repo" / MODEL_NAME
    build_cnn(repo / "1" / "model.onnx", seed=0)
    server = start_edgeloop("hot-swap", repo, "--threads", str(threads))
    x = np.random.default_rng(3).standard_normal((1, 3, 32, 32)).astype(np.float32)
    query = queries(server.address, x)["oip_binary"]
    swaps: list[dict[str, Any]] = []

    async def swapper() -> None:
        steps = [("add version 2", 2, 1), ("replace version 2 in place", 2, 2),
                 ("add version 3", 3, 3)]  # fmt: skip
        for label, version, seed in steps:
            await asyncio.sleep(duration / 4)
            await asyncio.to_thread(build_cnn, repo / str(version) / "model.onnx", seed)
            started = time.perf_counter()
            status, body = await _post(server.address, f"/v2/repository/models/{MODEL_NAME}/load")
            swaps.append({"step": label, "status": status, "report": body,
                          "load_ms": (time.perf_counter() - started) * 1000})  # fmt: skip

    async def both() -> loadgen.Run:
        load = asyncio.ensure_future(loadgen.closed_loop(server.address, query, 8, duration, 0.5))
        await swapper()
        return await load

    with running(server):
        run = loadgen.run_async(both())
        metrics = _get(server.address, "/metrics")
    per_version = _requests_by_version(metrics)
    summary = run.summary()
    failed = summary["queries"] - summary["ok"]
    return {"load": summary, "swaps": swaps, "failed_requests": failed, "by_version": per_version}


def _get(address: tuple[str, int], path: str) -> str:
    import httpx

    return httpx.get(f"http://{address[0]}:{address[1]}{path}", timeout=30).text


def _requests_by_version(metrics: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics):
        for s in family.samples:
            if s.name == "edgeloop_requests_total" and s.labels.get("code") == "200":
                counts[s.labels["version"]] = counts.get(s.labels["version"], 0) + s.value
    return counts


def overload(server: Server, query: Query, capacity: float, duration: float) -> dict[str, Any]:
    """Poisson arrivals at 2x ``capacity``; RSS sampled; is the server alive afterwards?

    For edgeloop the server's own view is read too: the p99 of ``edgeloop_request_seconds``
    (handler start to answer) over the admitted requests of this run, from its histogram.
    """
    pid = int(server.info["pid"])
    edgeloop = server.name != "baseline"
    before = _get(server.address, "/metrics") if edgeloop else ""
    run = loadgen.run_async(
        loadgen.poisson(server.address, query, 2 * capacity, duration, seed=7, rss_of=pid)
    )
    alive = server.proc.poll() is None
    try:
        live = _get(server.address, "/v2/health/live" if edgeloop else "/health")
    except Exception as exc:  # the point is to see whether it still answers at all
        live = f"no answer: {type(exc).__name__}"
    result = {"capacity_per_s": capacity, "run": run.summary(), "alive": alive, "live": live}
    if edgeloop:
        after = _get(server.address, "/metrics")
        result["server_p99_ms_at_most"] = _histogram_quantile(before, after, 0.99)
        old = _rejected(before)
        result["refused_by_reason"] = {k: v - old.get(k, 0.0) for k, v in _rejected(after).items()}
        result["max_queue_delay_ms"] = server.info["config"]["max_queue_delay_ms"]
    return result


def _rejected(metrics: str) -> dict[str, float]:
    """edgeloop_rejected_total by reason (queue_delay: the front door; queue_full: a gate)."""
    from prometheus_client.parser import text_string_to_metric_families

    found: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics):
        for s in family.samples:
            if s.name == "edgeloop_rejected_total":
                found[s.labels["reason"]] = found.get(s.labels["reason"], 0.0) + s.value
    return found


def _buckets(metrics: str) -> dict[float, float]:
    from prometheus_client.parser import text_string_to_metric_families

    found: dict[float, float] = {}
    for family in text_string_to_metric_families(metrics):
        for s in family.samples:
            if s.name == "edgeloop_request_seconds_bucket" and s.labels.get("role") == "primary":
                bound = float(s.labels["le"])
                found[bound] = found.get(bound, 0.0) + s.value
    return found


def _histogram_quantile(before: str, after: str, q: float) -> float | None:
    """The upper bound (ms) of the bucket holding quantile ``q`` of the requests in between."""
    old, new = _buckets(before), _buckets(after)
    delta = sorted((bound, new[bound] - old.get(bound, 0.0)) for bound in new)
    if not delta or delta[-1][1] <= 0:
        return None
    total = delta[-1][1]
    for bound, count in delta:
        if count >= q * total:
            return bound * 1000.0
    return None


# -- orchestration --------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per scenario")
    parser.add_argument("--step", type=float, default=4.0, help="seconds per server-scenario step")
    parser.add_argument("--threads", type=int, default=1, help="edgeloop's intra-op threads")
    parser.add_argument("--bound-ms", type=float, default=10.0, help="server scenario p99 bound")
    parser.add_argument("--out", type=Path, default=Path("bench"))
    parser.add_argument(
        "--overhead-only",
        type=int,
        metavar="SLICES",
        default=0,
        help="only the interleaved batch-1 overhead, SLICES rounds (result: overhead.json)",
    )
    parser.add_argument(
        "--overload-only",
        action="store_true",
        help="only the 2x-capacity overload of the small and the dense-head CNN (overload.json)",
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.overload_only:
        with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp:
            load_before = os.getloadavg()
            found = overload_only(Path(tmp), args.duration, args.threads)
        found["command"] = " ".join([Path(sys.executable).name, *sys.argv])
        found["machine"] = machine()
        found["load_before"], found["load_after"] = load_before, os.getloadavg()
        (args.out / "overload.json").write_text(json.dumps(found, indent=2) + "\n")
        from serve_report import render_overload

        print(render_overload([found]))
        return
    if args.overhead_only:
        with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp:
            model = build_cnn(Path(tmp) / f"{MODEL_NAME}.onnx")
            x = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32)
            load_before = os.getloadavg()
            found = overhead_interleaved(model, x, args.threads, args.overhead_only, 500)
        found["command"] = " ".join([Path(sys.executable).name, *sys.argv])
        found["machine"] = machine()
        found["load_before"], found["load_after"] = load_before, os.getloadavg()
        (args.out / "overhead.json").write_text(json.dumps(found, indent=2) + "\n")
        print(json.dumps(found, indent=2))
        return
    results: dict[str, Any] = {"command": " ".join([Path(sys.executable).name, *sys.argv])}
    results["machine"] = machine()
    workdir = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    try:
        results.update(run_all(workdir, args))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results["load_after"] = os.getloadavg()
    results["figures"] = figures(results)
    (args.out / "serve_bench_results.json").write_text(json.dumps(results, indent=2) + "\n")
    from serve_report import render

    (args.out / "serve_bench_results.md").write_text(render(results))
    print(json.dumps(results["figures"], indent=2))


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_before": os.getloadavg(),
    }


def run_all(workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    model = build_cnn(workdir / f"{MODEL_NAME}.onnx")
    x = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32)
    out: dict[str, Any] = {"model": {"file_bytes": model.stat().st_size, "input": [1, 3, 32, 32]}}
    d, threads = args.duration, str(args.threads)
    log("floor: bare session.run")
    out["floor"] = floor(model, args.threads, d)
    log("edgeloop serve, unbatched")
    with running(start_edgeloop("edgeloop", model, "--threads", threads)) as srv:
        q = queries(srv.address, x)
        out["idle_rss_mb"] = srv.info["idle_rss_mb"]
        out["torch_imported"] = srv.info["torch_imported"]
        e: dict[str, Any] = {}
        for name in ("oip_binary", "oip_json", "predict_json"):
            e[f"single_{name}"] = loadgen.single_stream(srv.address, q[name], d).summary()
        for name in ("oip_binary", "oip_json", "predict_json"):
            e[f"closed_{name}"] = closed(srv.address, q[name], d, srv.info["pid"])
        capacity = e["closed_oip_binary"]["throughput_per_s"]
        e["server_oip_binary"] = server_scenario(
            srv.address, q["oip_binary"], capacity, args.bound_ms, args.step
        )
        e["offline_oip_binary"] = offline_http(srv.address, q["oip_binary"], capacity)
        log("overload at 2x capacity")
        e["overload"] = overload(srv, q["oip_binary"], _capacity(e), d)
        out["edgeloop"] = e
    log("edgeloop serve, unbatched, every run in the batcher's worker thread")
    with running(
        start_edgeloop("threaded", model, "--threads", threads, "--inline-below-ms", "0")
    ) as srv:
        q = queries(srv.address, x)
        out["edgeloop_threaded"] = {
            "single_oip_binary": loadgen.single_stream(srv.address, q["oip_binary"], d).summary(),
            "closed_oip_binary": closed(srv.address, q["oip_binary"], d),
        }
    log("edgeloop serve, dynamic batching")
    flags = ("--threads", threads, "--max-batch", "16", "--max-delay-ms", "2")
    with running(start_edgeloop("edgeloop-batched", model, *flags)) as srv:
        q = queries(srv.address, x)
        b: dict[str, Any] = {"flags": list(flags)}
        b["closed_oip_binary"] = closed(srv.address, q["oip_binary"], d, srv.info["pid"])
        b["closed_oip_json"] = closed(srv.address, q["oip_json"], d)
        cap = b["closed_oip_binary"]["throughput_per_s"]
        b["server_oip_binary"] = server_scenario(
            srv.address, q["oip_binary"], cap, args.bound_ms, args.step
        )
        b["offline_oip_binary"] = offline_http(srv.address, q["oip_binary"], cap)
        out["edgeloop_batched"] = b
    log("baseline: FastAPI + ONNX Runtime")
    with running(start_baseline(model)) as srv:
        q = queries(srv.address, x)
        c: dict[str, Any] = {}
        single = loadgen.single_stream(srv.address, q["predict_json"], d)
        c["single_predict_json"] = single.summary()
        c["closed_predict_json"] = closed(srv.address, q["predict_json"], d)
        cap = c["closed_predict_json"]["throughput_per_s"]
        c["server_predict_json"] = server_scenario(
            srv.address, q["predict_json"], cap, args.bound_ms, args.step
        )
        c["offline_predict_json"] = offline_http(srv.address, q["predict_json"], cap)
        log("baseline overload at 2x its capacity")
        c["overload"] = overload(srv, q["predict_json"], _capacity(c), d)
        out["baseline"] = c
    log("hot swap under load")
    out["hot_swap"] = hot_swap(workdir, d, args.threads)
    log("batching on a dense-head CNN (engine-bound at batch 1)")
    out["dense_probe"] = dense_probe(workdir, d, args.threads)
    return out


def dense_probe(workdir: Path, duration: float, threads: int) -> dict[str, Any]:
    """The same CNN with a 4096-wide dense layer (33 MB of weights): at batch 1 its inference
    is a memory-bound matrix-vector product, the case dynamic batching exists for."""
    model = build_cnn(workdir / "cnn_dense.onnx", dense=4096)
    x = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32)
    result: dict[str, Any] = {"file_bytes": model.stat().st_size}
    result["floor"] = floor(model, threads, duration / 2)
    for name, flags in (
        ("unbatched", ("--threads", str(threads))),
        ("batched", ("--threads", str(threads), "--max-batch", "16", "--max-delay-ms", "2")),
    ):
        with running(start_edgeloop(name, model, "--name", MODEL_NAME, *flags)) as srv:
            query = queries(srv.address, x)["oip_binary"]
            result[name] = closed(srv.address, query, duration)
            if name == "unbatched":  # overload where the engine, not the loop, is the limit
                capacity = offline_http(srv.address, query, result[name]["throughput_per_s"])
                result["offline_unbatched"] = capacity
                result["overload"] = overload(srv, query, capacity["throughput_per_s"], duration)
    return result


def overload_only(workdir: Path, duration: float, threads: int) -> dict[str, Any]:
    """Scenario 6 alone for both models: capacity (offline), then Poisson at 2x it."""
    x = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32)
    found: dict[str, Any] = {}
    for label, dense in (("small CNN", 256), ("dense-head CNN", 4096)):
        model = build_cnn(workdir / f"cnn_{dense}.onnx", dense=dense)
        with running(
            start_edgeloop(label, model, "--name", MODEL_NAME, "--threads", str(threads))
        ) as srv:
            query = queries(srv.address, x)["oip_binary"]
            probe = closed(srv.address, query, min(duration, 5.0))
            capacity = offline_http(srv.address, query, probe["throughput_per_s"])
            found[label] = overload(srv, query, capacity["throughput_per_s"], duration)
    return found


def _capacity(runs: dict[str, Any]) -> float:
    """A server's capacity: its offline throughput (always a query outstanding, 64 in flight),
    the most it answered per second in this run."""
    return max(float(r["throughput_per_s"]) for n, r in runs.items() if n.startswith("offline_"))


def figures(r: dict[str, Any]) -> dict[str, Any]:
    """The issue's figures, each a measured number or a ratio of two, with the goal beside it."""
    bare_p50 = r["floor"]["single_stream"]["latency_ms"]["p50"]
    e, b, c = r["edgeloop"], r["edgeloop_batched"], r["baseline"]

    def p50(run: dict[str, Any]) -> float:
        return float(run["latency_ms"]["p50"])

    def tput(run: dict[str, Any]) -> float:
        return float(run["throughput_per_s"])

    def p99(run: dict[str, Any]) -> float:
        return float(run["latency_ms"]["p99"])

    base = c["closed_predict_json"]
    over = e["overload"]["run"]
    return {
        "overhead_binary_us": (p50(e["single_oip_binary"]) - bare_p50) * 1000,
        "overhead_json_us": (p50(e["single_oip_json"]) - bare_p50) * 1000,
        "overhead_predict_json_us": (p50(e["single_predict_json"]) - bare_p50) * 1000,
        "baseline_overhead_us": (p50(c["single_predict_json"]) - bare_p50) * 1000,
        "x16_throughput_vs_baseline": {
            name: {
                "ratio": tput(run) / tput(base),
                "p99_ms": p99(run),
                "baseline_p99_ms": p99(base),
            }
            for name, run in (
                ("edgeloop_predict_json", e["closed_predict_json"]),
                ("edgeloop_oip_json", e["closed_oip_json"]),
                ("edgeloop_oip_binary", e["closed_oip_binary"]),
                ("edgeloop_batched_oip_binary", b["closed_oip_binary"]),
            )
        },
        "batching_x16": {
            "throughput_ratio": tput(b["closed_oip_binary"]) / tput(e["closed_oip_binary"]),
            "p99_ratio": p99(b["closed_oip_binary"]) / p99(e["closed_oip_binary"]),
        },
        "hot_swap_failed_requests": r["hot_swap"]["failed_requests"],
        "overload_2x": {
            "offered_per_s": over["offered_rate_per_s"],
            "admitted_p99_ms": over["latency_ms"]["p99"],
            "admitted_p99_from_send_ms": over["latency_from_send_ms"]["p99"],
            "refused_p50_from_send_ms": over["refused_from_send_ms"]["p50"],
            "refused_by_reason": e["overload"].get("refused_by_reason"),
            "client_lag_p99_ms": over["client_lag_ms"]["p99"],
            "server_p99_ms_at_most": e["overload"].get("server_p99_ms_at_most"),
            "statuses": over["statuses"],
            "rss_mb": over["rss_mb"],
            "alive": e["overload"]["alive"],
        },
        "engine_batch16_gain": r["floor"]["offline_batch16_per_s"]
        / r["floor"]["offline_batch1_per_s"],
        "dense_probe": {
            "throughput_ratio": tput(r["dense_probe"]["batched"])
            / tput(r["dense_probe"]["unbatched"]),
            "p99_ratio": p99(r["dense_probe"]["batched"]) / p99(r["dense_probe"]["unbatched"]),
            "engine_batch16_gain": r["dense_probe"]["floor"]["offline_batch16_per_s"]
            / r["dense_probe"]["floor"]["offline_batch1_per_s"],
        },
        "idle_rss_mb": r["idle_rss_mb"],
        "torch_imported": r["torch_imported"],
    }


def log(text: str) -> None:
    print(f"[serve_bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
