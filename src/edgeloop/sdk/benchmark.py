"""``benchmark_model``: a benchmark run by the node's own agent, asked through the control plane.

The SDK queues a job (``POST /api/v1/benchmarks``); the node's agent picks it up with its node
token, times the model file in its slot (warm-up, then timed runs in a fresh process,
:func:`edgeloop.bench.measure.benchmark`) and posts the measurement back; the SDK polls the job
(control/bench_api.py, agent/bench_worker.py). Power comes from the node's meter (RAPL, INA3221)
when it has one; otherwise ``power_watts`` is None and ``power_reason`` says why.
"""

from __future__ import annotations

import time
from typing import Any

from edgeloop.core.errors import NotFoundError, TransportError
from edgeloop.sdk.control_client import ControlClient
from edgeloop.sdk.results import BenchmarkResult

POLL_S = 0.25


def run_on_node(
    control: ControlClient,
    ref: str,
    node: dict[str, Any],
    *,
    runs: int = 200,
    warmup: int = 20,
    batch_size: int = 1,
    timeout_s: float = 300.0,
) -> BenchmarkResult:
    """Benchmark model version ``ref`` on ``node`` (a ``/api/v1/nodes`` row).

    Raises:
        NotFoundError: the node does not hold that version (deploy it there first).
        TransportError: the benchmark failed on the node, or no answer within ``timeout_s``.
    """
    body = {"node": node["node_id"], "model": ref, "runs": runs, "warmup": warmup,
            "batch_size": batch_size}  # fmt: skip
    job = control.call("POST", "/api/v1/benchmarks", json=body)
    deadline = time.monotonic() + timeout_s
    while job["state"] in ("queued", "running"):
        if time.monotonic() > deadline:
            raise TransportError(
                f"node {node['name']!r} did not report benchmark {job['job_id']} of {ref} "
                f"within {timeout_s:.0f} s (state {job['state']})",
                hint="is the node online? get_node_status() shows when it last reported",
            )
        time.sleep(POLL_S)
        job = control.call("GET", f"/api/v1/benchmarks/{job['job_id']}")
    if job["state"] != "done":
        error = str(job["error"])
        kind = NotFoundError if "does not hold" in error else TransportError
        raise kind(f"benchmark of {ref} on node {node['name']!r} failed: {error}")
    m = job["measurement"]
    latency = m["latency_ms"]
    watts = m.get("power_w")
    return BenchmarkResult(
        model=ref,
        node=str(node["name"]),
        throughput_fps=float(m["throughput_per_s"]),
        power_watts=None if watts is None else float(watts),
        power_reason=None if watts is not None else str(m["power_source"]),
        power_source=str(m["power_source"]) if watts is not None else None,
        latency_p50_ms=float(latency["p50"]),
        latency_p99_ms=float(latency["p99"]),
        batch_size=int(m["batch_size"]),
        runs=int(m["runs"]),
        peak_rss_mb=m.get("peak_rss_mb"),
        cpu=str(m["cpu"]),
        threads=int(m["threads"]),
    )
