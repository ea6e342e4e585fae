"""``edgeloop agent`` under systemd's notify protocol, as a real process: ``READY=1`` once serving,
``WATCHDOG=1`` at half ``WATCHDOG_USEC`` while the reconcile loop makes progress, and no pings
while a pass hangs (so systemd would restart the agent). The notify socket is a real unix datagram
socket; the hang is a real TCP listener that accepts connections and never answers."""

from __future__ import annotations

import itertools
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.agent.agent_process import AgentProcess

WATCHDOG_USEC = 1_000_000  # pings every 0.5 s; silence after 1 s without progress


@pytest.fixture
def notify_socket() -> Iterator[socket.socket]:
    folder = tempfile.mkdtemp(prefix="el-sd-")  # unix socket paths must be short
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(f"{folder}/notify")
        yield server
    shutil.rmtree(folder)


def received(server: socket.socket, seconds: float) -> list[tuple[float, bytes]]:
    """Datagrams received within ``seconds``, with their arrival time."""
    out: list[tuple[float, bytes]] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        server.settimeout(left)
        try:
            out.append((time.monotonic(), server.recv(4096)))
        except TimeoutError:
            break
    return out


def gaps(messages: list[tuple[float, bytes]]) -> list[float]:
    pings = [t for t, m in messages if m == b"WATCHDOG=1"]
    return [b - a for a, b in itertools.pairwise(pings)]


def test_ready_then_watchdog_only_while_the_loop_progresses(
    tmp_path: Path, notify_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", notify_socket.getsockname())
    monkeypatch.setenv("WATCHDOG_USEC", str(WATCHDOG_USEC))
    with socket.socket() as probe:  # a free port where, for now, nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    agent = AgentProcess(tmp_path / "node", f"http://127.0.0.1:{port}",
                         enroll_token="el_enroll_unused", poll_s=0.2)  # fmt: skip
    hang = socket.socket()
    try:
        notify_socket.settimeout(10)
        assert notify_socket.recv(4096) == b"READY=1"
        # Enrolling fails fast (connection refused): the loop backs off but makes progress.
        before = received(notify_socket, 3.0)
        assert len([m for _, m in before if m == b"WATCHDOG=1"]) >= 4
        assert max(gaps(before)) < 1.0
        assert agent.status()["pid"] == agent.proc.pid  # serving all along
        # Now the control plane accepts and never answers: the next pass hangs for the
        # client's 10 s timeout, and the pings stop after 1 s of it.
        hang.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        hang.bind(("127.0.0.1", port))
        hang.listen(16)
        during = received(notify_socket, 20.0)
        assert max(gaps(during)) >= 5.0, gaps(during)
        assert agent.proc.poll() is None  # still serving; systemd would restart it
        # The hung pass timed out and the loop goes on: pings again at the interval.
        assert during[-1][0] - during[-2][0] < 1.0
    finally:
        hang.close()
        agent.stop()
