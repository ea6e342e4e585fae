"""Slow and silent clients on real sockets, and ``edgeloop serve``'s server with chosen
connection limits as a real process (tests/serving/test_slow_clients.py, and the figures of
docs/reliability.md: ``python -m tests.serving.slow_clients MODEL``, and
``python -m tests.serving.slow_clients --parse-cost`` for what the bounds cost a request).

Each attacker is a plain socket: ``silent`` connects and sends nothing, ``slowloris`` sends a
request line and then one header byte every ``every_s`` seconds, ``slow_body`` sends whole
headers announcing a body and then one body byte every ``every_s``. Each reports how long the
server kept it open and the status line it answered with, if any.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_RUN = """
import json, sys
from pathlib import Path
from edgeloop.serving.config import ServerConfig
from edgeloop.serving.connections import ConnectionLimits
from edgeloop.serving.repository import scan
from edgeloop.serving.server import run
limits = ConnectionLimits(**json.loads(sys.argv[2]))
run(scan([Path(sys.argv[1])], None), ServerConfig(connections=limits), host="127.0.0.1", port=0,
    announce=lambda line: None,
    on_ready=lambda info: print(json.dumps(info.to_dict()), flush=True))
"""


def start_server(model: Path, **limits: Any) -> tuple[subprocess.Popen[str], str]:
    """``edgeloop serve``'s ``run`` over ``model`` with ``ConnectionLimits(**limits)``: the
    process and its URL, once ready."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", _RUN, str(model), json.dumps(limits)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(timeout=10)
        raise RuntimeError(f"server exited {proc.returncode}: {proc.stderr.read()[-2000:]}")  # type: ignore[union-attr]
    return proc, str(json.loads(line)["url"])


@dataclass
class Held:
    """What the server did with one attacking connection."""

    kind: str
    open_s: float | None = None  # from connect to the server's close; None: still open
    status: str | None = None  # the status line answered, if any
    refused_connect: bool = False


def _address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def _attack(url: str, kind: str, every_s: float, limit_s: float, held: Held) -> None:
    started = time.monotonic()
    try:
        sock = socket.create_connection(_address(url), timeout=limit_s)
    except OSError:
        held.refused_connect = True
        return
    sock.settimeout(every_s)
    got = b""
    try:
        if kind == "slowloris":
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        elif kind == "slow_body":
            sock.sendall(
                b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100000\r\n\r\n"
            )
        while time.monotonic() - started < limit_s:
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                if kind != "silent":
                    sock.sendall(b"a" if kind == "slowloris" else b" ")
                continue
            if not chunk:
                held.open_s = time.monotonic() - started
                break
            got += chunk
    except OSError:  # reset by the server: closed as well
        held.open_s = time.monotonic() - started
    finally:
        sock.close()
        if got:
            held.status = got.split(b"\r\n", 1)[0].decode("latin-1")


def attack(
    url: str, kinds: dict[str, int], every_s: float, limit_s: float
) -> tuple[list[Held], Callable[[], None]]:
    """Start ``kinds[kind]`` attackers of each kind in threads; the list they fill and a join."""
    held: list[Held] = []
    threads = []
    for kind, count in kinds.items():
        for _ in range(count):
            h = Held(kind)
            held.append(h)
            t = threading.Thread(target=_attack, args=(url, kind, every_s, limit_s, h))
            t.daemon = True
            t.start()
            threads.append(t)

    def join() -> None:
        for t in threads:
            t.join(timeout=limit_s + 30)

    return held, join


def main() -> None:
    """The figures of docs/reliability.md: ``MODEL [SILENT SLOWLORIS SLOW_BODY]`` sockets
    (default 500, 400, 50) against the default limits, a normal client sending one-row
    ``/predict`` requests (a 4-feature model) for 15 s meanwhile."""
    import collections

    import httpx
    import numpy as np

    model = Path(sys.argv[1])
    counts = [int(n) for n in sys.argv[2:5]] or [500, 400, 50]
    kinds = dict(zip(["silent", "slowloris", "slow_body"], counts, strict=True))
    proc, url = start_server(model)
    try:
        held, join = attack(url, kinds, 1.0, 120.0)
        latencies, codes = [], []
        with httpx.Client(base_url=url, timeout=10) as client:
            end = time.monotonic() + 15.0
            while time.monotonic() < end:
                t0 = time.perf_counter()
                codes.append(client.post("/predict", json={"features": [0.0] * 4}).status_code)
                latencies.append((time.perf_counter() - t0) * 1000)
                time.sleep(0.05)
        join()
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    report: dict[str, Any] = {
        "normal_client": {
            "requests": len(codes),
            "codes": dict(collections.Counter(codes)),
            "p50_ms": float(np.percentile(latencies, 50)),
            "p99_ms": float(np.percentile(latencies, 99)),
        }
    }
    for kind in ("silent", "slowloris", "slow_body"):
        mine = [h for h in held if h.kind == kind]
        times = [h.open_s for h in mine if h.open_s is not None]
        report[kind] = {
            "sockets": len(mine),
            "cut_off": len(times),
            "open_s_max": max(times) if times else None,
            "open_s_p50": float(np.percentile(times, 50)) if times else None,
            "statuses": sorted({h.status or "(none)" for h in mine}),
            "refused_connect": sum(h.refused_connect for h in mine),
        }
    print(json.dumps(report, indent=1))


_REQUEST = (
    b"POST /v2/models/m/infer HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nAccept: */*\r\n"
    b"User-Agent: python-httpx/0.28\r\nAccept-Encoding: gzip, deflate\r\n"
    b"Connection: keep-alive\r\nContent-Type: application/json\r\nContent-Length: 20\r\n"
    b'\r\n{"inputs": [1, 2.0]}'
)


def parse_cost(reps: int = 21, requests: int = 50_000) -> dict[str, float]:
    """Microseconds per keep-alive request spent in uvicorn's httptools protocol, with and
    without the bounds: the request parsed and its answer marked sent, no app run (which would
    bury a microsecond in the event loop's noise). Alternating runs; the minimum of each."""
    import asyncio

    import uvicorn
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    from uvicorn.server import ServerState

    from edgeloop.serving.connections import ConnectionLimits, bounded_protocol

    class Transport(asyncio.Transport):
        def write(self, data: Any) -> None:
            pass

        def is_closing(self) -> bool:
            return False

        def get_extra_info(self, name: str, default: Any = None) -> Any:
            return {"peername": ("127.0.0.1", 1), "sockname": ("127.0.0.1", 2)}.get(name)

    class Parsing(HttpToolsProtocol):  # type: ignore[misc]
        def _start_asgi_task(self, cycle: Any, app: Any) -> None:
            pass  # no app: the protocol's own work only

    async def one(cls: type[Any]) -> float:
        config = uvicorn.Config(lambda *a: None, http=cls, lifespan="off", log_level="error")
        config.load()
        proto = cls(config=config, server_state=ServerState(), app_state={})
        proto.connection_made(Transport())
        started = time.perf_counter()
        for _ in range(requests):
            proto.data_received(_REQUEST)
            proto.cycle.response_complete = True
            proto.on_response_complete()
        took = time.perf_counter() - started
        proto.timeout_keep_alive_task.cancel()
        return took / requests * 1e6

    async def run() -> dict[str, float]:
        kinds = {"plain": Parsing, "bounded": bounded_protocol(Parsing, ConnectionLimits())}
        times: dict[str, list[float]] = {k: [] for k in kinds}
        for _ in range(reps):
            for name, cls in kinds.items():
                times[name].append(await one(cls))
        return {f"{k}_us": round(min(v), 2) for k, v in times.items()}

    return asyncio.run(run())


if __name__ == "__main__":
    if sys.argv[1:] == ["--parse-cost"]:
        print(json.dumps(parse_cost()))
    else:
        main()
