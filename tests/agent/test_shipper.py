"""The telemetry shipper against a real HTTP server on a loopback port: partition, 503s, lost
answers, wrong token. After the control plane comes back every item arrives exactly once after
de-duplication by id, and what the outbox dropped over its cap is reported, not lost."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from edgeloop.agent.outbox import Outbox
from edgeloop.agent.shipper import Shipper, ShipperConfig, backoff_delay
from edgeloop.core.errors import ConfigError, TransportError

NODE = "node-1"
TOKEN = "node-token-123"


class Control:
    """A stand-in control plane's telemetry endpoint: real socket, real HTTP, de-dup by id.

    ``mode``: ``ok`` answers 200; ``503`` refuses; ``lose-answer`` stores the batch, then answers
    503 (the answer was lost on the way back), so the shipper must send it again.
    """

    def __init__(self) -> None:
        # The port is held for the stand-in's whole life by a socket bound with SO_REUSEADDR that
        # never listens: while the server is stopped (the partition) a connection is refused, and
        # no other process can take the port before the server binds it again (HTTPServer binds
        # with SO_REUSEADDR too, next to this socket).
        self._hold = socket.socket()
        self._hold.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._hold.bind(("127.0.0.1", 0))
        self.port = int(self._hold.getsockname()[1])
        self.mode = "ok"
        self.deliveries: list[str] = []  # every item id received, duplicates included
        self.items: dict[str, dict[str, Any]] = {}  # de-duplicated by id
        self.attempts: list[tuple[float, int, int]] = []  # (time, status, items) of every POST
        self._server: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        control = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status, answer = control.handle(self.path, self.headers, body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()
        self._server = None

    def handle(self, path: str, headers: Any, body: bytes) -> tuple[int, dict[str, Any]]:
        with self._lock:
            if path != f"/api/v1/nodes/{NODE}/telemetry":
                return 404, {"error": {"type": "NotFound", "message": path, "hint": None}}
            if headers.get("Authorization") != f"Bearer {TOKEN}":
                self.attempts.append((time.monotonic(), 401, 0))
                return 401, {"error": {"type": "Unauthorized", "message": "bad", "hint": None}}
            if self.mode == "503":
                self.attempts.append((time.monotonic(), 503, 0))
                return 503, {"error": {"type": "Unavailable", "message": "busy", "hint": None}}
            items = json.loads(body)["items"]
            new = 0
            if self.mode == "reject":  # malformed in the control plane's eyes: not stored
                self.attempts.append((time.monotonic(), 200, len(items)))
                rejected = [{"id": i["id"], "reason": "unknown kind"} for i in items]
                return 200, {"accepted": 0, "duplicates": 0, "rejected": rejected}
            for item in items:
                self.deliveries.append(item["id"])
                if item["id"] not in self.items:
                    self.items[item["id"]] = item
                    new += 1
            status = 503 if self.mode == "lose-answer" else 200
            self.attempts.append((time.monotonic(), status, len(items)))
            return status, {"accepted": new, "duplicates": len(items) - new}


@pytest.fixture
def control() -> Iterator[Control]:
    server = Control()
    server.start()
    yield server
    if server._server is not None:
        server.stop()
    server._hold.close()


def _config(port: int, token: str = TOKEN, **kw: Any) -> ShipperConfig:
    settings: dict[str, Any] = {
        "idle_s": 0.05,
        "backoff_initial_s": 0.05,
        "backoff_max_s": 0.4,
        "timeout_s": 10.0,  # generous: a 200 that a busy machine answers late is still acked
        "lease_s": 30.0,
    }
    settings.update(kw)
    return ShipperConfig(f"http://127.0.0.1:{port}", NODE, token, **settings)


async def _until(cond: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def test_backoff_doubles_up_to_the_cap_with_equal_jitter() -> None:
    rng = random.Random(7)
    assert backoff_delay(0, 0.5, 60) == 0.0
    for n, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (8, 60.0), (500, 60.0)]:
        delays = [backoff_delay(n, 0.5, 60, rng) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1  # jittered


def test_bad_settings_are_refused_with_the_values() -> None:
    with pytest.raises(ConfigError, match="'ftp://x'"):
        ShipperConfig("ftp://x", NODE, TOKEN)
    with pytest.raises(ConfigError, match="batch_items"):
        ShipperConfig("http://x", NODE, TOKEN, batch_items=0)
    with pytest.raises(ConfigError, match="lease_s"):
        ShipperConfig("http://x", NODE, TOKEN, lease_s=5, timeout_s=10)


def test_partition_503_and_lost_answers_deliver_every_item_exactly_once(
    tmp_path: Path, control: Control
) -> None:
    box = Outbox.open(tmp_path / "outbox.sqlite", max_items=150)
    shipper = Shipper(box, _config(control.port, batch_items=40), rng=random.Random(1))
    put: list[str] = []

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(shipper.run(stop))
        put.extend(box.put("event", {"state": "WATCH", "i": i}) for i in range(50))
        await _until(lambda: len(control.items) == 50)
        # ...and acknowledged: a batch the control plane stored but whose answer the shipper has
        # not yet applied still counts against the cap below (a race seen on a busy machine).
        await _until(lambda: box.stats().total_items == 0)

        control.stop()  # partition: the control plane is gone
        put.extend(box.put("metrics", {"i": i}) for i in range(100))
        put.extend(box.put("sample", {"x": [i, i]}) for i in range(100))  # over the cap
        await _until(lambda: shipper.stats.consecutive_failures >= 3)
        assert "ConnectError" in (shipper.stats.last_error or "")

        control.mode = "503"  # back, but refusing
        control.start()
        await _until(lambda: shipper.stats.errors_by_status.get("503", 0) >= 2)
        control.mode = "lose-answer"  # stores a batch, the answer is lost
        await _until(lambda: len(control.deliveries) > 50)
        control.mode = "ok"
        await _until(lambda: box.stats().total_items == 0)
        stop.set()
        await task

    asyncio.run(scenario())
    box_stats = box.stats()
    box.close()
    dropped_reports = [i for i in control.items.values() if i["kind"] == "dropped"]
    reported = sum(r["payload"]["counts"].get("sample", 0) for r in dropped_reports)
    data_ids = [i for i in control.items if control.items[i]["kind"] != "dropped"]
    # 250 put, cap 150 (the first 50 already delivered): 100 samples arrived while 150 waited
    assert box_stats.dropped == {"sample": 50} and reported == 50
    assert len(set(data_ids)) == len(data_ids) == 200
    assert set(data_ids) <= set(put)
    lost = set(put) - set(data_ids)
    assert len(lost) == 50 and all(control.items.get(i) is None for i in lost)
    assert len(control.deliveries) > len(control.items)  # the lost answer made duplicates
    assert shipper.stats.duplicates >= 1
    assert shipper.stats.items_acked == sum(n for _, status, n in control.attempts if status == 200)


def test_back_off_spaces_out_retries_while_refused(tmp_path: Path, control: Control) -> None:
    box = Outbox.open(tmp_path / "outbox.sqlite")
    box.put("metrics", {"cpu": 0.5})
    control.mode = "503"
    shipper = Shipper(box, _config(control.port, backoff_initial_s=0.1, backoff_max_s=0.4))

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(shipper.run(stop))
        await _until(lambda: len(control.attempts) >= 6)
        stop.set()
        await task

    asyncio.run(scenario())
    gaps = [b[0] - a[0] for a, b in zip(control.attempts, control.attempts[1:], strict=False)]
    # equal jitter: the n-th wait is at least half of min(0.4, 0.1 * 2**(n-1))
    assert len(control.attempts) >= 6 and {s for _, s, _ in control.attempts} == {503}
    floors = [min(0.4, 0.1 * 2**n) / 2 for n in range(len(gaps))]
    assert all(g >= f for g, f in zip(gaps, floors, strict=True)), (gaps, floors)
    assert max(gaps) >= 0.2
    assert box.stats().total_items == 1 and box.stats().leased == 0
    box.close()


def test_a_wrong_token_keeps_the_items_and_says_so(tmp_path: Path, control: Control) -> None:
    with Outbox.open(tmp_path / "outbox.sqlite") as box:
        box.put("event", {"state": "COMMIT"})
        shipper = Shipper(box, _config(control.port, token="wrong"))

        async def once() -> None:
            try:
                with pytest.raises(TransportError, match="answered 401"):
                    await shipper.ship_once()
            finally:
                await shipper.aclose()

        asyncio.run(once())
        assert box.stats().total_items == 1 and box.stats().leased == 0
        assert control.items == {}


def test_items_the_control_plane_rejects_are_acked_and_counted(
    tmp_path: Path, control: Control
) -> None:
    with Outbox.open(tmp_path / "outbox.sqlite") as box:
        for i in range(3):
            box.put("metrics", {"i": i})
        control.mode = "reject"
        shipper = Shipper(box, _config(control.port))

        async def drain() -> int:
            try:
                return await shipper.drain()
            finally:
                await shipper.aclose()

        assert asyncio.run(drain()) == 3
        assert shipper.stats.rejected == 3 and shipper.stats.accepted == 0
        assert box.stats().total_items == 0  # retrying cannot fix a malformed item


def test_the_real_control_plane_stores_every_item_once(tmp_path: Path) -> None:
    """The contract end to end: ``edgeloop control`` as a real process, a real enrolled node, a
    lost answer (the batch arrived, the agent never heard), then the shipper's re-send."""
    import httpx
    from tests.control.process import control_process, enroll

    admin = {"Authorization": "Bearer admin-token-for-the-shipper-test"}
    with control_process(tmp_path / "ctl", None, admin_token=admin["Authorization"][7:]) as ctl:
        made = httpx.post(f"{ctl.url}/api/v1/enrollment-tokens", json={}, headers=admin, timeout=30)
        node = enroll(ctl.url, made.json()["token"], "shipper-node")
        auth = {"Authorization": f"Bearer {node['node_token']}"}
        with Outbox.open(tmp_path / "agent" / "outbox.sqlite", max_items=20) as box:
            box.put_many([("event", {"state": "WATCH", "i": i}) for i in range(5)])
            metrics = [
                ("metrics", {"model": "lin", "model_version": "1", "i": i}) for i in range(10)
            ]
            box.put_many(metrics)
            box.put_many([("sample", bytes([i]) * 8) for i in range(10)])  # 25 > 20: 5 go
            items = box.batch()
            url = f"{ctl.url}/api/v1/nodes/{node['node_id']}/telemetry"
            wire = {"items": [i.to_wire() for i in items]}
            lost = httpx.post(url, json=wire, headers=auth, timeout=30)
            assert lost.status_code == 200 and lost.json()["accepted"] == len(items) == 21
            box.release([i.id for i in items])  # the agent never saw that answer

            config = ShipperConfig(ctl.url, node["node_id"], node["node_token"], timeout_s=30)
            shipper = Shipper(box, config)

            async def drain() -> int:
                try:
                    return await shipper.drain()
                finally:
                    await shipper.aclose()

            assert asyncio.run(drain()) == 21
            assert (shipper.stats.accepted, shipper.stats.duplicates) == (0, 21)
            assert box.stats().total_items == 0
        query = f"{ctl.url}/api/v1/telemetry?node={node['node_id']}&limit=100"
        stored = httpx.get(query, headers=admin, timeout=30).json()["items"]
    assert sorted(s["id"] for s in stored) == sorted(i.id for i in items)
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for s in stored:
        by_kind.setdefault(s["kind"], []).append(s)
    assert {k: len(v) for k, v in by_kind.items()} == {
        "event": 5,
        "metrics": 10,
        "sample": 5,
        "dropped": 1,
    }
    assert by_kind["dropped"][0]["payload"]["counts"] == {"sample": 5}
    assert {s["model"] for s in by_kind["metrics"]} == {"lin"}
