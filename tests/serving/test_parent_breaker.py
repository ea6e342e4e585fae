"""The parent tier's circuit breaker, against real sockets: a refused port and a real v2 answer.

The breaker's clock is a fake the tests step (``time`` in :mod:`edgeloop.serving.parent`), so
"still paused" and "the pause is over" never depend on how fast this machine ran the calls;
the sockets and HTTP exchanges are real.
"""

from __future__ import annotations

import asyncio
import http.server
import socket
import threading
from collections.abc import Iterator

import numpy as np
import orjson
import pytest

from edgeloop.core.errors import TransportError
from edgeloop.serving import parent as parent_module
from edgeloop.serving.parent import ParentTier

ROWS = {"input": np.ones((1, 2), np.float32)}


class Clock:
    """Stands in for the ``time`` module in :mod:`edgeloop.serving.parent`."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(parent_module, "time", fake)
    return fake


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A port bound for the whole test but not listening: connections to it are refused, and no
    other process can take it meanwhile (a port merely closed again could be)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


class _Answer(http.server.BaseHTTPRequestHandler):
    posts = 0  # requests that reached this server (one server per test)

    def do_POST(self) -> None:
        type(self).posts += 1
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
def answering() -> Iterator[tuple[int, type[_Answer]]]:
    handler = type("Answer", (_Answer,), {"posts": 0})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield int(server.server_address[1]), handler
    server.shutdown()
    server.server_close()


def test_a_failed_parent_is_skipped_then_probed_again(clock: Clock, refused_port: int) -> None:
    tier = ParentTier(f"http://127.0.0.1:{refused_port}/v2/models/m/infer", 30.0, pause_s=0.3)

    async def scenario() -> list[str]:
        messages = []
        for step in (0.0, 0.1, 0.25, 0.5):  # seconds of the fake clock before each call
            clock.now += step
            with pytest.raises(TransportError) as err:
                await tier.infer(ROWS)
            messages.append(err.value.message)
        await tier.close()
        return messages

    first, skipped, probed, skipped_longer = asyncio.run(scenario())
    assert "did not answer: ConnectError" in first
    assert "skipped for another 0.2 s after 1 failure(s) in a row" in skipped
    assert "ConnectError" in skipped  # the last real error is named
    assert "did not answer: ConnectError" in probed  # after the pause: a real attempt
    # The pause doubled after the second failure: 0.6 s, of which 0.5 s have passed.
    assert "skipped for another 0.1 s after 2 failure(s) in a row" in skipped_longer
    assert tier.failures == 2


def test_skipping_makes_no_attempt_and_a_success_closes_the_breaker(
    clock: Clock, refused_port: int, answering: tuple[int, type[_Answer]]
) -> None:
    port, handler = answering
    tier = ParentTier(f"http://127.0.0.1:{refused_port}/v2/models/m/infer", 30.0, pause_s=0.2)

    async def scenario() -> tuple[int, dict[str, np.ndarray]]:
        with pytest.raises(TransportError, match="did not answer"):
            await tier.infer(ROWS)
        tier.url = f"http://127.0.0.1:{port}/v2/models/m/infer"  # the parent is back
        clock.now += 0.1  # still within the pause: skipped without a request (nor a timeout)
        with pytest.raises(TransportError, match="skipped"):
            await tier.infer(ROWS)
        posts_while_skipped = handler.posts
        clock.now += 0.15  # the pause is over: the next call probes, and the parent answers
        out = await tier.infer(ROWS)
        await tier.close()
        return posts_while_skipped, out

    posts_while_skipped, out = asyncio.run(scenario())
    assert posts_while_skipped == 0
    assert handler.posts == 1
    np.testing.assert_allclose(out["out"], [[0.1, 0.9]])
    assert tier.failures == 0
