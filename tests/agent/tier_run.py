"""Pieces of the tier test (tests/agent/test_tier.py): agents with tier flags as OS processes,
started together, and a counting HTTP proxy standing for a site's uplink to the control plane.

The proxy forwards every request as it came, ``Host`` header included, so the URLs the control
plane writes into enrollment answers (TUF metadata and targets) point back at the proxy: every
byte a site's node gets from the control plane passes it and is counted by path.
"""

from __future__ import annotations

import http.server
import subprocess
import threading
from collections import Counter
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
from tests.agent.agent_process import _RUN, AgentProcess

_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
        "proxy-authorization", "proxy-authenticate", "content-length"}  # fmt: skip


class CountingProxy:
    """Forwards ``http://127.0.0.1:PORT/...`` to ``upstream``; ``gets`` counts GETs by path and
    ``bytes_out`` the body bytes sent back, by path."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.gets: Counter[str] = Counter()
        self.bytes_out: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._client = httpx.Client(timeout=30.0)
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> CountingProxy:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._client.close()

    def artifact_gets(self, sha256: str) -> int:
        """GETs of the artifact target whose content hash is ``sha256``."""
        with self._lock:
            return sum(
                n for path, n in self.gets.items() if f"/tuf/targets/artifacts/{sha256}." in path
            )

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                try:
                    answer = proxy._client.request(
                        self.command, proxy.upstream + self.path, headers=headers, content=body
                    )
                except httpx.HTTPError:
                    self.send_response(502)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                with proxy._lock:
                    if self.command == "GET":
                        proxy.gets[self.path] += 1
                    proxy.bytes_out[self.path] += len(answer.content)
                self.send_response(answer.status_code)
                for key, value in answer.headers.items():
                    if key.lower() not in _HOP and key.lower() != "content-encoding":
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            def do_GET(self) -> None:
                self._forward()

            def do_POST(self) -> None:
                self._forward()

            def do_PATCH(self) -> None:
                self._forward()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


class TierAgent(AgentProcess):
    """``edgeloop agent`` with extra flags (``--parent``, ``--serve-children``, ...); started by
    the constructor, ready after :meth:`wait_ready` (so several start at once)."""

    def __init__(
        self, home: Path, control: str, *extra: str, enroll_token: str, poll_s: float = 0.2
    ) -> None:
        self.home = home
        args = ["-c", _RUN, "agent", "--control", control, "--port", "0", "--home", str(home),
                "--poll-s", str(poll_s), "--log-level", "warning",
                "--enroll-token", enroll_token, *extra]  # fmt: skip
        import sys

        self.log = home.parent / f"{home.name}-agent.log"
        self._stderr = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, *args], stdout=subprocess.PIPE, stderr=self._stderr
        )
        self.http = httpx.Client(timeout=10.0)  # replaced once the agent says where it serves

    def wait_ready(self) -> TierAgent:
        self.ready = self._read_ready()
        self.url = str(self.ready["url"])
        self.http.close()
        self.http = httpx.Client(base_url=self.url, timeout=10.0)
        return self

    def credentials(self) -> tuple[str, str]:
        """The node id and token the agent enrolled with (HOME/agent/identity.json)."""
        import json

        doc = json.loads((self.home / "agent" / "identity.json").read_text())
        return str(doc["node_id"]), str(doc["node_token"])

    def infer_rows(self, model: str, rows: list[list[float]]) -> dict[str, Any]:
        body = {"inputs": [{"name": "input", "shape": [len(rows), len(rows[0])],
                            "datatype": "FP32", "data": [v for r in rows for v in r]}]}  # fmt: skip
        answer = self.http.post(f"/v2/models/{model}/infer", json=body)
        assert answer.status_code == 200, answer.text
        doc: dict[str, Any] = answer.json()
        return doc
