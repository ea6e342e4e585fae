"""The fetcher's limits against a real HTTP server that misbehaves on purpose."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tuf.api import exceptions

from edgeloop.agent.fetcher import HttpxFetcher


class _Trickle(http.server.BaseHTTPRequestHandler):
    """Announces 1000 bytes, sends one every 50 ms."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        for _ in range(1000):
            try:
                self.wfile.write(b"x")
                self.wfile.flush()
            except OSError:
                return
            time.sleep(0.05)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def trickle() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Trickle)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/targets/"
    server.shutdown()
    server.server_close()


def test_a_download_past_its_deadline_stops_and_keeps_its_part(
    trickle: str, tmp_path: Path
) -> None:
    # 2 s: long enough for the first bytes to arrive on a loaded machine, far from the 50 s the
    # server takes to send everything.
    fetcher = HttpxFetcher("t", tmp_path, trickle, deadline_s=2.0, timeout_s=5.0)
    url = trickle + "abc.model.onnx"
    start = time.monotonic()
    with pytest.raises(exceptions.SlowRetrievalError):
        fetcher.prefetch(url, 1000)
    took = time.monotonic() - start
    fetcher.close()
    assert 2.0 <= took < 10.0  # the deadline, not the server (50 s), ended it
    held = fetcher.part_path(url).stat().st_size
    assert 0 < held < 1000  # what came before the deadline stays, to be continued
