"""A small closed-loop HTTP load driver (MLPerf LoadGen's "server"-less cousin).

``concurrency`` clients each send a request, wait for the answer, and send the next, for
``duration_s`` seconds. Latency is measured per request on the client side, so it includes the
network stack and the server's queueing: what a caller sees. Used by the quickstart's serving
stage; the benchmarks under ``bench/`` drive heavier scenarios.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeloop.core.errors import require

# One request: (method path, JSON body); the check says whether the answer was right.
MakeRequest = Callable[[int], tuple[str, dict[str, Any]]]
Check = Callable[[int, dict[str, Any]], bool]


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What the clients measured; ``correct`` counts answers the check accepted."""

    requests: int
    errors: int
    statuses: dict[int, int]
    correct: int
    seconds: float
    concurrency: int
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None

    @property
    def throughput_per_s(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        ok = self.requests - self.errors
        return {
            "requests": self.requests,
            "errors": self.errors,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "served_accuracy": self.correct / ok if ok else None,
            "seconds": round(self.seconds, 3),
            "concurrency": self.concurrency,
            "throughput_per_s": self.throughput_per_s,
            "latency_ms": {"p50": self.p50_ms, "p90": self.p90_ms, "p99": self.p99_ms},
        }


def drive(
    base_url: str,
    make: MakeRequest,
    check: Check,
    *,
    duration_s: float = 2.0,
    concurrency: int = 4,
    timeout_s: float = 10.0,
) -> LoadResult:
    """Run the closed loop against ``base_url`` and return the client-side figures."""
    return asyncio.run(_drive(base_url, make, check, duration_s, concurrency, timeout_s))


async def _drive(
    base_url: str,
    make: MakeRequest,
    check: Check,
    duration_s: float,
    concurrency: int,
    timeout_s: float,
) -> LoadResult:
    httpx = require("httpx", "serve", "The load driver")
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    correct = 0
    counter = iter(range(10**12))
    start = time.perf_counter()
    deadline = start + duration_s

    async def client(http: Any) -> None:
        nonlocal correct
        while time.perf_counter() < deadline:
            i = next(counter)
            path, body = make(i)
            t0 = time.perf_counter_ns()
            try:
                r = await http.post(path, json=body)
                status = r.status_code
                good = status == 200 and check(i, r.json())
            except httpx.HTTPError:
                status, good = 0, False  # 0: no HTTP answer (refused, reset, timed out)
            latencies.append((time.perf_counter_ns() - t0) / 1e6)
            statuses[status] += 1
            correct += int(good)

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout_s, limits=limits) as http:
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
    seconds = time.perf_counter() - start
    q = np.percentile(latencies, [50, 90, 99]) if latencies else [None] * 3
    return LoadResult(
        requests=len(latencies),
        errors=sum(n for s, n in statuses.items() if s != 200),
        statuses=dict(statuses),
        correct=correct,
        seconds=seconds,
        concurrency=concurrency,
        p50_ms=None if q[0] is None else float(q[0]),
        p90_ms=None if q[1] is None else float(q[1]),
        p99_ms=None if q[2] is None else float(q[2]),
    )
