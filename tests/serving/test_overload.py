"""A real ``edgeloop serve`` process driven past its capacity: refusals come fast, with
``Retry-After``; what is admitted is answered within a bound set by the queue delay budget.

Timings are only ever compared with generous multiples of a budget or of the same machine's
own measurement taken in the test, never with a tight absolute figure: these tests run on
small, shared machines.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.serving.models import make_cnn_onnx, make_slow_onnx
from tests.serving.test_serve_process import _ready_info, _start

Address = tuple[str, int]


@dataclass
class Tally:
    """What the clients saw: latency (s, from send) per status, Retry-After values."""

    latencies: dict[int, list[float]] = field(default_factory=dict)
    retry_after: Counter[str] = field(default_factory=Counter)
    broken: int = 0

    def add(self, status: int, seconds: float, retry: str | None) -> None:
        self.latencies.setdefault(status, []).append(seconds)
        if retry is not None:
            self.retry_after[retry] += 1

    def count(self, status: int) -> int:
        return len(self.latencies.get(status, []))

    def p99(self, status: int) -> float:
        return float(np.percentile(self.latencies[status], 99))


def _request(address: Address, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    head = [f"POST {path} HTTP/1.1", f"Host: {address[0]}:{address[1]}"]
    head += [f"{k}: {v}" for k, v in {**headers, "Content-Length": str(len(body))}.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def _send(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes
) -> tuple[int, str | None]:
    writer.write(raw)
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    fields = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:])}
    await reader.readexactly(int(fields.get("content-length", "0")))
    return int(head[0].split(" ")[1]), fields.get("retry-after")


async def _clients(
    address: Address, raw: bytes, clients: int, seconds: float, tally: Tally, backoff_s: float = 0
) -> None:
    """``clients`` keep-alive connections, each sending its next request when answered
    (``backoff_s`` later after a 429: a client that backs off a little, not for Retry-After)."""
    stop = time.perf_counter() + seconds

    async def one() -> None:
        reader, writer = await asyncio.open_connection(*address)
        try:
            while (sent := time.perf_counter()) < stop:
                status, retry = await _send(reader, writer, raw)
                tally.add(status, time.perf_counter() - sent, retry)
                if status == 429 and backoff_s:
                    await asyncio.sleep(backoff_s)
        except (OSError, asyncio.IncompleteReadError):
            tally.broken += 1
        finally:
            writer.close()

    await asyncio.gather(*(one() for _ in range(clients)))


async def _newcomers(address: Address, raw: bytes, count: int, tally: Tally) -> None:
    """``count`` new connections at once, one request each (latency counted from connect)."""

    async def one() -> None:
        started = time.perf_counter()
        try:
            reader, writer = await asyncio.open_connection(*address)
            status, retry = await _send(reader, writer, raw)
            writer.close()
            tally.add(status, time.perf_counter() - started, retry)
        except (OSError, asyncio.IncompleteReadError):
            tally.broken += 1

    await asyncio.gather(*(one() for _ in range(count)))


def _rejected(metrics: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics):
        for s in family.samples:
            if s.name == "edgeloop_rejected_total":
                found[s.labels["reason"]] = found.get(s.labels["reason"], 0.0) + s.value
    return found


def _inference_s(metrics: str) -> tuple[float, float]:
    """Engine seconds and requests so far, from the server's own histogram."""
    total = count = 0.0
    for family in text_string_to_metric_families(metrics):
        for s in family.samples:
            if s.name == "edgeloop_inference_seconds_sum":
                total += s.value
            elif s.name == "edgeloop_inference_seconds_count":
                count += s.value
    return total, count


def _get(address: Address, path: str) -> str:
    import httpx

    return httpx.get(f"http://{address[0]}:{address[1]}{path}", timeout=30).text


@pytest.fixture
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Address, Any]]:
    model, flags = request.param
    if model == "cnn":
        path = make_cnn_onnx(tmp_path / "cnn.onnx")
    else:  # narrow and deep: ~50 MFLOP a row, so a run takes ms with a small body
        path = make_slow_onnx(tmp_path / "slow.onnx", width=256, repeats=384)
    proc = _start(str(path), "--threads", "1", *flags)
    try:
        info = _ready_info(proc)
        host, port = info["url"].removeprefix("http://").rsplit(":", 1)
        yield (host, int(port)), info
    finally:
        proc.kill()
        proc.communicate()


def _cnn_request(address: Address) -> bytes:
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype("<f4")
    header = orjson.dumps(
        {"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32",
                     "parameters": {"binary_data_size": x.nbytes}}]}
    )  # fmt: skip
    headers = {"Inference-Header-Content-Length": str(len(header))}
    return _request(address, "/v2/models/cnn/infer", header + x.tobytes(), headers)


DOOR_BUDGET_MS = 10.0


@pytest.mark.parametrize(
    "server",
    [
        (
            "cnn",
            (
                "--max-queue-delay-ms",
                str(DOOR_BUDGET_MS),
                "--max-queue",
                "100000",
                # Inline by setting, not by how fast the self-test ran on this (loaded) machine.
                "--inline-below-ms",
                "60000",
            ),
        )
    ],
    indirect=True,
)
def test_a_loop_bound_server_refuses_stale_requests_at_the_door_and_lets_newcomers_in(
    server: tuple[Address, Any],
) -> None:
    """The small CNN runs on the event loop: the backlog forms before any model's queue.

    300 busy connections keep the loop far past its capacity (a request costs ~0.3 ms of loop
    time, so ~100 ms of backlog); the model's own queue limit is out of the way, so every
    refusal is the front door's (requests older than the budget). Meanwhile 200 new clients
    connect at once: each must get an answer (200 or 429), not wait in the accept queue.
    """
    address, _ = server
    raw = _cnn_request(address)
    busy, fresh = Tally(), Tally()

    async def scenario() -> None:
        load = asyncio.ensure_future(_clients(address, raw, 300, 3.0, busy))
        await asyncio.sleep(1.0)
        await _newcomers(address, raw, 200, fresh)
        await load

    asyncio.run(scenario())
    rejected = _rejected(_get(address, "/metrics"))
    statuses = {**Counter({s: busy.count(s) for s in busy.latencies})}
    assert busy.broken == 0 and fresh.broken == 0
    assert set(busy.latencies) <= {200, 429} and set(fresh.latencies) <= {200, 429}, statuses
    assert busy.count(200) > 0 and busy.count(429) > 0, statuses
    # Every refusal was for the wait (at the door, or at the model's gate: had or ahead);
    # the count limit is out of the way.
    refused = busy.count(429) + fresh.count(429)
    assert rejected == {"queue_delay": refused}, rejected
    assert sum(busy.retry_after.values()) == busy.count(429)
    assert set(busy.retry_after) == {"1"}
    # Newcomers are answered like the clients already connected, not seconds later.
    everyone = [t for s in busy.latencies.values() for t in s]
    fresh_all = [t for s in fresh.latencies.values() for t in s]
    assert len(fresh_all) == 200
    assert max(fresh_all) <= 10 * float(np.percentile(everyone, 99)) + 0.5, (
        f"newcomers waited up to {max(fresh_all):.2f} s; connected clients' p99 "
        f"{np.percentile(everyone, 99):.3f} s"
    )


SLOW_BUDGET_MS = 50.0
CLIENTS = 64


@pytest.mark.parametrize(
    "server",
    [
        (
            "slow",
            (
                "--max-queue-delay-ms",
                str(SLOW_BUDGET_MS),
                "--inline-below-ms",
                "0",
                "--max-queue",
                "1000",
            ),
        )
    ],
    indirect=True,
)
def test_an_engine_bound_server_admits_only_what_it_can_start_within_the_budget(
    server: tuple[Address, Any],
) -> None:
    """A model whose run (~10 ms or more) outweighs the HTTP work: 64 clients would queue
    ~64 runs deep (the count limit is out of the way); the delay budget admits only about
    budget / run time. The clients wait 50 ms after a 429 before trying again (a client
    retrying at once turns refusals into a storm that takes the engine's CPU on a small
    machine).
    """
    address, _ = server
    x = np.random.default_rng(0).standard_normal((32, 256)).astype("<f4")
    header = orjson.dumps(
        {"inputs": [{"name": "input", "shape": [32, 256], "datatype": "FP32",
                     "parameters": {"binary_data_size": x.nbytes}}],
         "outputs": [{"name": "output", "parameters": {"binary_data": True}}]}
    )  # fmt: skip
    headers = {"Inference-Header-Content-Length": str(len(header))}
    raw = _request(address, "/v2/models/slow/infer", header + x.tobytes(), headers)
    alone, busy = Tally(), Tally()
    asyncio.run(_clients(address, raw, 1, 1.5, alone))  # one at a time: the run time here
    # A lone client is answered; only a stall of this shared machine longer than the budget
    # (between the request's arrival and its turn) may refuse one of its requests, by design.
    alone_statuses = {s: alone.count(s) for s in alone.latencies}
    assert set(alone.latencies) <= {200, 429} and alone.count(200) >= 5, alone_statuses
    run_s = statistics.median(alone.latencies[200])
    metrics = _get(address, "/metrics")
    before, rejected_before = _inference_s(metrics), _rejected(metrics)
    assert rejected_before.get("queue_delay", 0) == sum(rejected_before.values())
    assert sum(rejected_before.values()) == alone.count(429), rejected_before
    asyncio.run(_clients(address, raw, CLIENTS, 4.0, busy, backoff_s=0.05))
    metrics = _get(address, "/metrics")
    rejected = {
        reason: n - rejected_before.get(reason, 0.0) for reason, n in _rejected(metrics).items()
    }
    after = _inference_s(metrics)
    if after[1] > before[1]:  # runs slow down under load: the mean engine time meanwhile
        run_s = max(run_s, (after[0] - before[0]) / (after[1] - before[1]))
    statuses = {s: busy.count(s) for s in busy.latencies}
    assert busy.broken == 0 and set(busy.latencies) <= {200, 429}, statuses
    assert busy.count(200) > 0 and busy.count(429) > 0, statuses
    # The model's gate refused them for the wait they would have had (or had already).
    assert rejected.get("queue_delay", 0) == sum(rejected.values()) == busy.count(429), rejected
    assert sum(busy.retry_after.values()) == busy.count(429)
    # Admitted: waited at most ~the budget (an estimate), then ran. Unbounded, the wait is
    # ~64 runs (measured: p99 1.7-1.9 s with --max-queue-delay-ms 0). The bound is half that,
    # far looser than the budget: a loaded machine stalls the server's process at will.
    bound = max(2 * SLOW_BUDGET_MS / 1000 + 4 * run_s, CLIENTS / 2 * run_s)
    assert busy.p99(200) <= bound, (
        f"admitted p99 {busy.p99(200) * 1000:.0f} ms > {bound * 1000:.0f} ms "
        f"(run alone {run_s * 1000:.1f} ms, statuses {statuses})"
    )
    # Refusals are answered at once: no run, no wait.
    assert statistics.median(busy.latencies[429]) <= run_s
