"""The parent tier's circuit breaker, against real sockets: a closed port and a real v2 answer."""

from __future__ import annotations

import asyncio
import http.server
import socket
import threading
import time
from collections.abc import Iterator

import numpy as np
import orjson
import pytest

from edgeloop.core.errors import TransportError
from edgeloop.serving.parent import ParentTier

ROWS = {"input": np.ones((1, 2), np.float32)}


def _closed_port() -> int:
    with socket.socket() as sock:  # free a moment ago, closed now: connections are refused
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Answer(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        body = orjson.dumps(
            {"outputs": [{"name": "out", "shape": [1, 2], "datatype": "FP32", "data": [0.1, 0.9]}]}
        )
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def answering() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def test_a_failed_parent_is_skipped_then_probed_again() -> None:
    tier = ParentTier(f"http://127.0.0.1:{_closed_port()}/v2/models/m/infer", 2.0, pause_s=0.3)

    async def scenario() -> list[str]:
        messages = []
        for wait in (0.0, 0.0, 0.4, 0.0):
            await asyncio.sleep(wait)
            with pytest.raises(TransportError) as err:
                await tier.infer(ROWS)
            messages.append(err.value.message)
        await tier.close()
        return messages

    first, skipped, probed, skipped_longer = asyncio.run(scenario())
    assert "did not answer: ConnectError" in first
    assert "skipped for another" in skipped and "1 failure(s) in a row" in skipped
    assert "ConnectError" in skipped  # the last real error is named
    assert "did not answer: ConnectError" in probed  # after the pause: a real attempt
    assert "2 failure(s) in a row" in skipped_longer and tier.failures == 2


def test_skipping_costs_no_timeout_and_a_success_closes_the_breaker(answering: int) -> None:
    port = _closed_port()
    tier = ParentTier(f"http://127.0.0.1:{port}/v2/models/m/infer", 2.0, pause_s=0.2)

    async def scenario() -> tuple[float, dict[str, np.ndarray]]:
        with pytest.raises(TransportError):
            await tier.infer(ROWS)
        t0 = time.monotonic()
        with pytest.raises(TransportError, match="skipped"):
            await tier.infer(ROWS)
        skip_s = time.monotonic() - t0
        tier.url = f"http://127.0.0.1:{answering}/v2/models/m/infer"  # the parent is back
        await asyncio.sleep(0.25)
        out = await tier.infer(ROWS)
        await tier.close()
        return skip_s, out

    skip_s, out = asyncio.run(scenario())
    assert skip_s < 0.05
    np.testing.assert_allclose(out["out"], [[0.1, 0.9]])
    assert tier.failures == 0
