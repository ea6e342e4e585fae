"""A load generator after MLPerf LoadGen's scenarios, over raw HTTP/1.1 keep-alive connections.

Scenarios (MLPerf Inference rules, section "Scenarios"):

- single-stream: one query at a time, the next sent when the previous answered; the figure is
  the 90th percentile latency (p50 and p99 are reported too);
- server: queries arrive as a Poisson process at a target rate (open loop: an arrival never
  waits for an earlier answer); latency counts from the *scheduled* arrival, so time a query
  spent waiting for a free connection is counted, not hidden; the figure is the highest rate
  whose p99 stays under a bound;
- offline: every query is available at once; the figure is throughput. Over HTTP "at once" is
  ``in_flight`` queries outstanding at all times.

Plus the closed loop the issue asks for: N clients, each sending its next query when the last
one answered (throughput and p99 at N concurrent clients).

The client is deliberately small (prebuilt request bytes, a minimal response parser, uvloop) so
that its own cost per query (tens of microseconds) stays a small, equal share for every server
measured. Status codes are counted; latency percentiles are over answered (2xx) queries only
and the count of each status is reported beside them.
"""

from __future__ import annotations

import asyncio
import math
import random
import socket
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Query:
    """One prebuilt HTTP/1.1 request: its bytes are sent as they are, again and again."""

    raw: bytes

    @classmethod
    def post(cls, address: Address, path: str, body: bytes, headers: dict[str, str]) -> Query:
        lines = [f"POST {path} HTTP/1.1", f"Host: {address[0]}:{address[1]}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        lines.append(f"Content-Length: {len(body)}")
        return cls(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)


@dataclass(slots=True)
class Run:
    """What one scenario run measured: latencies (s) of 2xx answers, status counts, duration."""

    scenario: str
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    duration_s: float = 0.0
    retry_after: Counter[str] = field(default_factory=Counter)
    rss_mb: list[float] = field(default_factory=list)
    offered_rate: float | None = None
    from_send: list[float] = field(default_factory=list)  # open loop: 2xx latency from the send
    lag: list[float] = field(default_factory=list)  # open loop: schedule -> send (client side)
    refused_from_send: list[float] = field(default_factory=list)  # open loop: 429s, from send

    def summary(self) -> dict[str, Any]:
        ok = np.asarray(self.latencies) * 1000.0
        answered = sum(self.statuses.values())

        def pct(q: float) -> float | None:
            return float(np.percentile(ok, q)) if ok.size else None

        return {
            "scenario": self.scenario,
            "offered_rate_per_s": self.offered_rate,
            "queries": answered,
            "ok": int(ok.size),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "duration_s": self.duration_s,
            "throughput_per_s": ok.size / self.duration_s if self.duration_s else None,
            "latency_ms": {"p50": pct(50), "p90": pct(90), "p99": pct(99), "max": pct(100)},
            "retry_after": dict(self.retry_after),
            "rss_mb": _rss_summary(self.rss_mb),
            **self._open_loop(),
        }

    def _open_loop(self) -> dict[str, Any]:
        if self.offered_rate is None:
            return {}
        sent = np.asarray(self.from_send) * 1000.0
        lag = np.asarray(self.lag) * 1000.0

        def pct(a: np.ndarray, q: float) -> float | None:
            return float(np.percentile(a, q)) if a.size else None

        refused = np.asarray(self.refused_from_send) * 1000.0
        return {
            "latency_from_send_ms": {"p50": pct(sent, 50), "p99": pct(sent, 99)},
            "refused_from_send_ms": {"p50": pct(refused, 50), "p99": pct(refused, 99)},
            "client_lag_ms": {"p50": pct(lag, 50), "p99": pct(lag, 99), "max": pct(lag, 100)},
        }


def _rss_summary(samples: Sequence[float]) -> dict[str, float | int] | None:
    if not samples:
        return None
    return {"samples": len(samples), "first": samples[0], "last": samples[-1], "max": max(samples)}


def _parse_head(head: bytes) -> tuple[int, int, str | None]:
    """Status, Content-Length and Retry-After of a response head."""
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length, retry = 0, None
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        key = name.strip().lower()
        if key == b"content-length":
            length = int(value)
        elif key == b"retry-after":
            retry = value.strip().decode()
    return status, length, retry


class BlockingConnection:
    """One keep-alive connection for the single-stream scenario (no event loop in the way)."""

    def __init__(self, address: Address) -> None:
        self.sock = socket.create_connection(address)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def send(self, query: Query) -> tuple[int, bytes]:
        self.sock.sendall(query.raw)
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self._recv()
        head, _, rest = self.buffer.partition(b"\r\n\r\n")
        status, length, _ = _parse_head(head)
        while len(rest) < length:
            rest += self._recv()
        self.buffer = rest[length:]
        return status, rest[:length]

    def _recv(self) -> bytes:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        return chunk

    def close(self) -> None:
        self.sock.close()


class AsyncConnection:
    """One keep-alive connection on the event loop."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, address: Address) -> AsyncConnection:
        reader, writer = await asyncio.open_connection(*address)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer)

    async def send(self, query: Query) -> tuple[int, bytes, str | None]:
        self.writer.write(query.raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status, length, retry = _parse_head(head[:-4])
        body = await self.reader.readexactly(length) if length else b""
        return status, body, retry

    def close(self) -> None:
        self.writer.close()


def single_stream(address: Address, query: Query, duration_s: float, warmup: int = 50) -> Run:
    """One query at a time for ``duration_s`` after ``warmup`` untimed queries."""
    conn = BlockingConnection(address)
    run = Run("single-stream")
    try:
        for _ in range(warmup):
            conn.send(query)
        start = time.perf_counter()
        while (now := time.perf_counter()) - start < duration_s:
            status, _ = conn.send(query)
            done = time.perf_counter()
            run.statuses[status] += 1
            if 200 <= status < 300:
                run.latencies.append(done - now)
        run.duration_s = time.perf_counter() - start
    finally:
        conn.close()
    return run


def single_stream_local(
    call: Callable[[], Any], duration_s: float, warmup: int = 50, limit: int | None = None
) -> Run:
    """The same scenario around a local call (bare ``session.run``: the floor); at most
    ``limit`` timed calls when given."""
    run = Run("single-stream")
    for _ in range(warmup):
        call()
    start = time.perf_counter()
    while (now := time.perf_counter()) - start < duration_s and (
        limit is None or len(run.latencies) < limit
    ):
        call()
        run.latencies.append(time.perf_counter() - now)
        run.statuses[200] += 1
    run.duration_s = time.perf_counter() - start
    return run


async def closed_loop(
    address: Address, query: Query, clients: int, duration_s: float, warmup_s: float = 1.0
) -> Run:
    """``clients`` connections, each sending its next query when its last one answered."""
    conns = [await AsyncConnection.open(address) for _ in range(clients)]
    run = Run(f"closed-loop x{clients}")
    measuring = False
    stop_at = time.perf_counter() + warmup_s + duration_s

    async def client(conn: AsyncConnection) -> None:
        while (sent := time.perf_counter()) < stop_at:
            status, _, retry = await conn.send(query)
            if measuring:
                _record(run, status, retry, time.perf_counter() - sent)

    tasks = [asyncio.ensure_future(client(c)) for c in conns]
    await asyncio.sleep(warmup_s)
    measuring, start = True, time.perf_counter()
    await asyncio.gather(*tasks)
    run.duration_s = time.perf_counter() - start
    for conn in conns:
        conn.close()
    return run


def _record(run: Run, status: int, retry: str | None, latency: float) -> None:
    run.statuses[status] += 1
    if 200 <= status < 300:
        run.latencies.append(latency)
    if retry is not None:
        run.retry_after[retry] += 1


async def poisson(
    address: Address,
    query: Query,
    rate: float,
    duration_s: float,
    *,
    seed: int = 0,
    max_connections: int = 512,
    rss_of: int | None = None,
) -> Run:
    """Open loop: Poisson arrivals at ``rate`` per second for ``duration_s``.

    Inter-arrival times are exponential with mean 1/rate from a seeded generator (the load
    pattern, not a figure). Arrivals go into one FIFO; up to ``max_connections`` connection
    workers (opened as needed) take them in order, so an arrival that found every connection
    busy waits its turn (counted as client lag) instead of being overtaken, and the client
    holds one task per connection, not one per query: its own loop stays short under
    overload, so a late answer is the server's, not the client's. ``rss_of`` names a server
    pid whose resident memory is sampled every 0.25 s during the run.
    """
    run = Run("server (Poisson)", offered_rate=rate)
    rng = random.Random(seed)
    due: asyncio.Queue[float | None] = asyncio.Queue()
    workers: list[asyncio.Task[None]] = []
    idle = 0

    async def worker() -> None:
        nonlocal idle
        conn: AsyncConnection | None = None
        while True:
            idle += 1
            scheduled = await due.get()
            idle -= 1
            if scheduled is None:
                break
            try:
                if conn is None:
                    conn = await AsyncConnection.open(address)
                sent = time.perf_counter()
                status, _, retry = await conn.send(query)
            except (OSError, asyncio.IncompleteReadError):
                run.statuses[-1] += 1  # the connection broke: counted, never retried
                if conn is not None:
                    conn.close()
                conn = None
                continue
            done = time.perf_counter()
            _record(run, status, retry, done - scheduled)
            run.lag.append(sent - scheduled)
            if 200 <= status < 300:
                run.from_send.append(done - sent)
            elif status == 429:
                run.refused_from_send.append(done - sent)
        if conn is not None:
            conn.close()

    sampler = asyncio.ensure_future(_sample_rss(rss_of, run)) if rss_of else None
    start = next_at = time.perf_counter()
    end = start + duration_s
    while next_at < end:
        delay = next_at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        due.put_nowait(next_at)
        if idle < due.qsize() and len(workers) < max_connections:
            workers.append(asyncio.ensure_future(worker()))
        next_at += rng.expovariate(rate)
    for _ in workers:
        due.put_nowait(None)
    await asyncio.gather(*workers)
    run.duration_s = time.perf_counter() - start
    if sampler is not None:
        sampler.cancel()
    return run


async def offline(address: Address, query: Query, total: int, in_flight: int) -> Run:
    """``total`` queries with ``in_flight`` outstanding at all times; throughput is the figure."""
    conns = [await AsyncConnection.open(address) for _ in range(in_flight)]
    run = Run(f"offline ({in_flight} in flight)")
    left = total

    async def worker(conn: AsyncConnection) -> None:
        nonlocal left
        while left > 0:
            left -= 1
            sent = time.perf_counter()
            status, _, retry = await conn.send(query)
            _record(run, status, retry, time.perf_counter() - sent)

    start = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in conns))
    run.duration_s = time.perf_counter() - start
    for conn in conns:
        conn.close()
    return run


async def _sample_rss(pid: int | None, run: Run) -> None:
    status = Path(f"/proc/{pid}/status")
    while True:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmRSS:"):
                    run.rss_mb.append(int(line.split()[1]) / 1024)
        except OSError:
            return
        await asyncio.sleep(0.25)


def run_async(coro: Any) -> Any:
    """Run a scenario on uvloop (a fraction of asyncio's per-query cost) when installed."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else math.nan
