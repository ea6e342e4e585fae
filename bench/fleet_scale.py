"""Fleet scale: many agents' reconcile polls, telemetry uploads and reports against the control
plane (issue 7, docs/benchmarks.md "Fleet scale").

Every simulated agent is a real node enrolled through the real API (an enrollment token each,
then ``POST /api/v1/enroll``) with its own node token. The control plane is the real
``edgeloop control`` process, pinned to core 0 with ``taskset -c 0``; this script (the load
generator) pins itself to the other core and measures its own CPU so a saturated generator is
seen, not mistaken for the server's limit.

Each agent, every 10 s with +-10 % jitter (first poll at a random offset):

* ``GET /api/v1/nodes/{id}/desired`` with ``If-None-Match`` of the revision it saw (304, the
  common case). Its first poll carries no ETag and every ``--stale`` share of polls carries a
  stale one (an agent that has not seen the current revision), both answered 200 with the body.
* every ``--upload-every`` polls: ``POST .../telemetry`` (``--items`` metrics items, fresh UUIDs,
  as the agent's shipper sends them) and ``POST .../report`` (a report as the agent sends it).

Figures per point: polls/s offered (agents / 10 s) and achieved (answered polls in the window /
window), p50/p99 of polls and of uploads, errors (anything but the expected status, time-outs,
connection errors), CPU of the control process(es) (``/proc/PID/stat``) and of the generator.

    .venv/bin/python bench/fleet_scale.py --client aiohttp --backend sqlite --agents 1000 5000
    .venv/bin/python bench/fleet_scale.py --client aiohttp --backend postgres --agents 1000 10000
    .venv/bin/python bench/fleet_scale.py --client aiohttp --backend postgres --replicas 2 \
        --replica-cores 0,1 --spread 1 2 --agents 10000

``--client aiohttp`` is the one to measure with: httpx's pool costs grow with its connections
and it saturated its core at 2,000 agents (docs/benchmarks.md "Fleet scale"). ``--spread 1 2``
measures one enrolled fleet on the first replica alone, then spread over both (agent i talks to
replica i mod K, as DNS round robin or an L4 balancer would).

PostgreSQL: ``--pg-url`` (default ``postgresql+psycopg://root@127.0.0.1:5432/test``); each run
uses a fresh schema, dropped afterwards. ``--profile`` samples the control process with py-spy
during one window and prints its top frames.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import selectors
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
PG_URL = "postgresql+psycopg://root@127.0.0.1:5432/test"
ADMIN_TOKEN = "fleet-scale-bench-admin-token-0123456789"
PERIOD_S = 10.0
JITTER = 0.10
TIMEOUT_S = 10.0


# --- processes -------------------------------------------------------------------------------


@dataclass
class Control:
    url: str
    proc: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return int(self.proc.pid)


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def control_plane(home: Path, db_url: str, core: int) -> Iterator[Control]:
    """``edgeloop control`` on a free port, pinned to ``core``, until the block ends."""
    cmd = ["taskset", "-c", str(core), sys.executable, "-m", "edgeloop.cli.app", "control",
           "--port", "0", "--home", str(home), "--format", "json", "--db", db_url]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("EDGELOOP_DB", "EDGELOOP_HOME")}
    env["EDGELOOP_ADMIN_TOKEN"] = ADMIN_TOKEN
    # Its log goes to a file: a pipe nobody reads would fill up and stall the process.
    log = (home / f"control-{core}-{time.monotonic_ns()}.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, env=env)
    try:
        assert proc.stdout is not None
        selector = selectors.DefaultSelector()
        selector.register(proc.stdout, selectors.EVENT_READ)
        deadline, line = time.monotonic() + 120, b""
        while not line and time.monotonic() < deadline and proc.poll() is None:
            if selector.select(timeout=0.2):
                line = proc.stdout.readline()
        selector.close()
        if not line:
            raise SystemExit(f"edgeloop control did not start: see {log.name}")
        yield Control(json.loads(line)["url"], proc)
    finally:
        log.close()
        errors = Path(log.name).read_text(errors="replace").count("Traceback")
        if errors:
            print(f"# control plane {proc.pid} logged {errors} tracebacks ({log.name})")
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def database(backend: str, home: Path, pg_url: str) -> Iterator[str]:
    """A fresh database URL: a SQLite file in ``home``, or a new PostgreSQL schema."""
    if backend == "sqlite":
        yield f"sqlite:///{home / 'registry.db'}"
        return
    schema = f"edgeloop_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(pg_url)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    url = sa.make_url(pg_url).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


# --- enrollment ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    node_id: str
    token: str
    base: str  # the control plane (replica) this agent talks to


async def enroll(urls: list[str], count: int, concurrency: int = 32) -> list[Node]:
    """Enroll ``count`` nodes through the real API (a one-time token each)."""
    nodes: list[Node] = []
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    caps = {"arch": "x86_64", "os": "linux", "cpu_count": 2, "accelerators": [], "providers": []}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency,
                          keepalive_expiry=3.0)  # fmt: skip
    failures: Counter[str] = Counter()

    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def one(i: int) -> None:
            for attempt in range(5):  # a dropped connection: start this node over
                try:
                    return await attempt_one(i)
                except httpx.TransportError as exc:
                    failures[type(exc).__name__] += 1
                    if attempt == 4:
                        raise
                    await asyncio.sleep(0.5)

        async def attempt_one(i: int) -> None:
            base = urls[i % len(urls)]
            answer = await client.post(
                f"{base}/api/v1/enrollment-tokens", json={"labels": {"bench": "fleet"}},
                headers=admin,
            )  # fmt: skip
            answer.raise_for_status()
            body = {"enrollment_token": answer.json()["token"], "name": f"sim-{i}",
                    "capabilities": caps, "agent_url": None}  # fmt: skip
            answer = await client.post(f"{base}/api/v1/enroll", json=body)
            answer.raise_for_status()
            doc = answer.json()
            nodes.append(Node(doc["node_id"], doc["node_token"], base))

        queue = list(range(count))

        async def worker() -> None:
            while queue:
                await one(queue.pop())

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    if failures:
        print(f"# enrollment calls retried after a dropped connection: {dict(failures)}")
    return nodes


# --- load ------------------------------------------------------------------------------------


@dataclass
class Tally:
    polls: list[float] = field(default_factory=list)  # latencies (s) inside the window
    uploads: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)


def _now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _items(count: int) -> list[dict[str, Any]]:
    return [
        {"id": str(uuid.uuid4()), "kind": "metrics", "created_at": _now_iso(),
         "content_type": "application/json",
         "payload": {"window_s": 30, "model": "digits", "model_version": "1", "requests": 120,
                     "errors": 0, "p50_ms": 1.2, "p99_ms": 4.1}}
        for _ in range(count)
    ]  # fmt: skip


def _report() -> dict[str, Any]:
    return {"revision": 0,
            "updater": {"state": "WATCH", "target_revision": 0, "error": None, "outcome": None,
                        "failed_revision": None},
            "active": None, "previous": None, "self_test": None,
            "health": {"window_s": 30, "requests": 120, "errors": 0, "error_rate": 0.0,
                       "p99_ms": 4.1},
            "events": []}  # fmt: skip


class Agent:
    """One simulated agent's reconcile loop (real HTTP, its own token)."""

    def __init__(self, node: Node, args: argparse.Namespace, window: tuple[float, float]) -> None:
        self.node, self.args, self.window = node, args, window
        self.headers = {"Authorization": f"Bearer {node.token}"}
        self.etag: str | None = None
        self.rng = random.Random(node.node_id)

    async def call(
        self, client: Client, tally: Tally, kind: str, method: str, path: str,
        expected: tuple[int, ...], headers: dict[str, str], body: Any = None,
    ) -> tuple[int, str | None] | None:  # fmt: skip
        start = time.monotonic()
        inside = self.window[0] <= start < self.window[1]
        try:
            status, etag = await client.request(method, self.node.base + path, headers, body)
        except Exception as exc:  # any failure to get an answer is an error
            if inside:
                tally.errors[f"{kind} {type(exc).__name__}"] += 1
            return None
        if inside:
            (tally.polls if kind == "poll" else tally.uploads).append(time.monotonic() - start)
            tally.statuses[f"{kind} {status}"] += 1
            if status not in expected:
                tally.errors[f"{kind} HTTP {status}"] += 1
        return status, etag

    async def run(self, client: Client, tally: Tally, start: float) -> None:
        nid, args = self.node.node_id, self.args
        await asyncio.sleep(max(0.0, start + self.rng.uniform(0, PERIOD_S) - time.monotonic()))
        n, phase = 0, self.rng.randrange(args.upload_every or 1)
        while time.monotonic() < self.window[1]:
            began = time.monotonic()
            headers = dict(self.headers)
            if self.etag is not None:
                headers["If-None-Match"] = '"-1"' if self.rng.random() < args.stale else self.etag
            answer = await self.call(client, tally, "poll", "GET", f"/api/v1/nodes/{nid}/desired",
                                     (200, 304), headers)  # fmt: skip
            if answer is not None and answer[0] in (200, 304):
                self.etag = answer[1] or self.etag
            if args.upload_every and (n + phase) % args.upload_every == 0:
                await self.call(client, tally, "telemetry", "POST",
                                f"/api/v1/nodes/{nid}/telemetry", (200,), self.headers,
                                {"items": _items(args.items)})  # fmt: skip
                await self.call(client, tally, "report", "POST", f"/api/v1/nodes/{nid}/report",
                                (204,), self.headers, _report())  # fmt: skip
            n += 1
            period = PERIOD_S * self.rng.uniform(1 - JITTER, 1 + JITTER)
            await asyncio.sleep(max(0.0, began + period - time.monotonic()))


class Client:
    """One HTTP client for every simulated agent: httpx (the default) or aiohttp.

    Keep-alive is shorter than uvicorn's 5 s, so the client never reuses a socket the server is
    closing (that race would read as errors that are not the control plane's).
    """

    def __init__(self, kind: str, connections: int) -> None:
        self.kind, self.connections = kind, connections
        self.stack = contextlib.AsyncExitStack()
        self.httpx: httpx.AsyncClient | None = None
        self.aiohttp: Any = None

    async def __aenter__(self) -> Client:
        if self.kind == "aiohttp":
            import aiohttp

            connector = aiohttp.TCPConnector(limit=self.connections, keepalive_timeout=3.0)
            timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
            self.aiohttp = await self.stack.enter_async_context(
                aiohttp.ClientSession(connector=connector, timeout=timeout)
            )
        else:
            limits = httpx.Limits(max_connections=self.connections,
                                  max_keepalive_connections=None, keepalive_expiry=3.0)  # fmt: skip
            self.httpx = await self.stack.enter_async_context(
                httpx.AsyncClient(timeout=TIMEOUT_S, limits=limits)
            )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stack.aclose()

    async def request(
        self, method: str, url: str, headers: dict[str, str], body: Any
    ) -> tuple[int, str | None]:
        """The status and ETag of one call (the body is read and dropped)."""
        if self.httpx is not None:
            answer = await self.httpx.request(method, url, headers=headers, json=body)
            return answer.status_code, answer.headers.get("etag")
        async with self.aiohttp.request(method, url, headers=headers, json=body) as answer:
            await answer.read()
            return int(answer.status), answer.headers.get("ETag")


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


async def load(nodes: list[Node], args: argparse.Namespace, pids: list[int]) -> dict[str, Any]:
    """Run every agent for warm-up + window; figures of the window."""
    tally = Tally()
    start = time.monotonic()
    window = (start + args.warmup, start + args.warmup + args.window)
    agents = [Agent(node, args, window) for node in nodes]
    async with Client(args.client, args.connections) as client:
        tasks = [asyncio.create_task(a.run(client, tally, start)) for a in agents]
        await asyncio.sleep(max(0.0, window[0] - time.monotonic()))
        cpu0, own0, load0 = [_cpu_s(p) for p in pids], time.process_time(), os.getloadavg()[0]
        await asyncio.sleep(max(0.0, window[1] - time.monotonic()))
        cpu1, own1, load1 = [_cpu_s(p) for p in pids], time.process_time(), os.getloadavg()[0]
        await asyncio.gather(*tasks)
    agents_n = len(nodes)
    return {
        "agents": agents_n,
        "window_s": args.window,
        "offered_polls_s": round(agents_n / PERIOD_S, 1),
        "achieved_polls_s": round(len(tally.polls) / args.window, 1),
        "poll_p50_ms": _pct(tally.polls, 0.50),
        "poll_p99_ms": _pct(tally.polls, 0.99),
        "uploads_s": round(len(tally.uploads) / args.window, 1),
        "upload_p50_ms": _pct(tally.uploads, 0.50),
        "upload_p99_ms": _pct(tally.uploads, 0.99),
        "errors": sum(tally.errors.values()),
        "error_kinds": dict(tally.errors),
        "statuses": dict(tally.statuses),
        "control_cpu_pct": [
            round(100 * (b - a) / args.window, 1) for a, b in zip(cpu0, cpu1, strict=True)
        ],
        "loadgen_cpu_pct": round(100 * (own1 - own0) / args.window, 1),
        # The machine's 1-minute load average at the window's start and end (2 cores; other
        # people's work on it shows here, not in the two CPU figures above).
        "loadavg_1m": [round(load0, 2), round(load1, 2)],
    }


# --- profile ---------------------------------------------------------------------------------


# Leaf frames of a thread waiting for work (the event loop's select, idle pool workers). Under
# uvloop the loop's wait (and its C transports' work) shows as the frame that started the loop,
# ``Runner.run``: it is left out too, so uvloop's own C work is not in the busy shares.
_IDLE = frozenset({"EpollSelector.select (selectors.py)", "Condition.wait (threading.py)",
                   "select (selectors.py)", "wait (threading.py)",
                   "_worker (thread.py)", "Runner.run (runners.py)"})  # fmt: skip


def _frame(text: str) -> str:
    """``func (path/file.py:line)`` -> ``func (file.py)``."""
    name, _, where = text.partition(" (")
    return f"{name} ({where.rsplit('/', 1)[-1].split(':')[0].rstrip(')')})"


def top_frames(raw: Path, count: int = 15) -> dict[str, list[tuple[str, float]]]:
    """Self and inclusive shares of the hottest functions in py-spy's ``--format raw`` output."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        frames = [_frame(f) for f in stack.split(";")]
        if frames[-1] in _IDLE:
            continue  # waiting for work (event loop, idle thread-pool workers), not work
        total += int(n)
        own[frames[-1]] += int(n)
        for frame in set(frames):
            incl[frame] += int(n)
    share = lambda c: [(k, round(100 * v / total, 1)) for k, v in c.most_common(count)]  # noqa: E731
    return {"self": share(own), "inclusive": share(incl), "busy_samples": [("total", total)]}


# --- main ------------------------------------------------------------------------------------


def point(args: argparse.Namespace, controls: list[Control], nodes: list[Node]) -> dict[str, Any]:
    pids = [c.pid for c in controls]
    if args.serving:  # the agents talk to the first ``serving`` replicas only
        nodes = [Node(n.node_id, n.token, controls[i % args.serving].url)
                 for i, n in enumerate(nodes)]  # fmt: skip
    spy = None
    raw = Path(tempfile.mkstemp(suffix=".txt")[1])
    spy_bin = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy"
    if args.profile:
        spy = subprocess.Popen(
            ["taskset", "-c", "1", spy_bin, "record", "-p", str(pids[0]), "-f", "raw", "-o",
             str(raw), "-r", "100", "-d", str(int(args.warmup + args.window)), "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
    result = asyncio.run(load(nodes, args, pids))
    if spy is not None:
        spy.wait()
        result["profile"] = top_frames(raw)
    raw.unlink(missing_ok=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--pg-url", default=os.environ.get("EDGELOOP_BENCH_PG_URL", PG_URL))
    parser.add_argument("--agents", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--repeats", type=int, default=2, help="runs per point (median kept)")
    parser.add_argument("--replicas", type=int, default=1, help="control-plane processes")
    parser.add_argument("--replica-cores", default="0", help="cores of the replicas, e.g. 0,0")
    parser.add_argument("--spread", type=int, nargs="*", default=None,
                        help="measure each point with the agents on the first K replicas, "
                        "for each K given (e.g. 1 2); default: spread over all")  # fmt: skip
    parser.add_argument("--loadgen-core", type=int, default=1)
    parser.add_argument("--warmup", type=float, default=12.0)
    parser.add_argument("--window", type=float, default=30.0)
    parser.add_argument("--stale", type=float, default=0.05, help="share of stale-ETag polls")
    parser.add_argument("--upload-every", type=int, default=6, help="telemetry+report per N polls")
    parser.add_argument("--items", type=int, default=5, help="telemetry items per upload")
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--client", choices=("httpx", "aiohttp"), default="httpx")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="append JSON lines here")
    args = parser.parse_args()
    if args.backend == "sqlite" and args.replicas > 1:
        parser.error("replicas share one PostgreSQL database; use --backend postgres")
    cores = [int(c) for c in args.replica_cores.split(",")]
    cores = (cores * args.replicas)[: args.replicas]
    with tempfile.TemporaryDirectory(prefix="edgeloop-fleet-") as tmp:
        home = Path(tmp)
        with database(args.backend, home, args.pg_url) as url, contextlib.ExitStack() as stack:
            controls = [stack.enter_context(control_plane(home, url, c)) for c in cores]
            os.sched_setaffinity(0, {args.loadgen_core})
            began = time.monotonic()
            nodes = asyncio.run(enroll([c.url for c in controls], max(args.agents)))
            took = time.monotonic() - began
            where = f"{args.backend}, {len(controls)} replica(s) on cores {cores}"
            print(f"# enrolled {len(nodes)} nodes in {took:.1f} s ({where})", flush=True)
            for agents, serving in [(a, s) for a in args.agents for s in args.spread or [0]]:
                args.serving = serving
                runs = []
                for rep in range(args.repeats):
                    result = point(args, controls, nodes[:agents])
                    result.update(backend=args.backend, replicas=len(controls), run=rep + 1,
                                  serving_replicas=serving or len(controls))  # fmt: skip
                    runs.append(result)
                    print(json.dumps(result), flush=True)
                    if args.out:
                        with args.out.open("a") as out:
                            out.write(json.dumps(result) + "\n")
                _summary(runs)


def _summary(runs: list[dict[str, Any]]) -> None:
    def med(key: str) -> Any:
        values = [r[key] for r in runs if r[key] is not None]
        return round(statistics.median(values), 2) if values else None

    cpu = statistics.median(sum(r["control_cpu_pct"]) for r in runs)
    print(f"## {runs[0]['backend']} x{runs[0]['serving_replicas']} agents={runs[0]['agents']} "
          f"offered={runs[0]['offered_polls_s']}/s achieved={med('achieved_polls_s')}/s "
          f"p50={med('poll_p50_ms')} p99={med('poll_p99_ms')} ms errors={med('errors')} "
          f"upload p99={med('upload_p99_ms')} ms control CPU={cpu:.0f}% "
          f"loadgen CPU={med('loadgen_cpu_pct')}% (median of {len(runs)}) "
          f"load average={[r['loadavg_1m'] for r in runs]}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
