"""``edgeloop agent`` under systemd's notify protocol, as a real process: ``READY=1`` once serving,
``WATCHDOG=1`` at half ``WATCHDOG_USEC`` while the reconcile loop makes progress, and no pings
while a pass hangs (so systemd would restart the agent). The notify socket is a real unix datagram
socket; the hang is a real TCP listener that accepts connections and never answers."""

from __future__ import annotations

import contextlib
import itertools
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.agent.agent_process import AgentProcess

# Pings every 1 s; silence after 2 s without progress. (systemd restarts a unit that sent none
# for WATCHDOG_USEC: a gap up to that long is on time, so a busy machine has 1 s of slack.)
WATCHDOG_USEC = 2_000_000
WATCHDOG_S = WATCHDOG_USEC / 1e6


@pytest.fixture
def notify_socket() -> Iterator[socket.socket]:
    folder = tempfile.mkdtemp(prefix="el-sd-")  # unix socket paths must be short
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(f"{folder}/notify")
        yield server
    shutil.rmtree(folder)


def received(
    server: socket.socket, until: Callable[[list[tuple[float, bytes]]], bool], timeout_s: float
) -> list[tuple[float, bytes]]:
    """Datagrams, with their arrival time, until ``until(received so far)`` holds; the deadline
    is a failure (TimeoutError naming what came)."""
    out: list[tuple[float, bytes]] = []
    deadline = time.monotonic() + timeout_s
    while not until(out):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"notifications within {timeout_s} s: {out}")
        server.settimeout(left)
        with contextlib.suppress(TimeoutError):
            out.append((time.monotonic(), server.recv(4096)))
    return out


def pings(messages: list[tuple[float, bytes]]) -> list[float]:
    return [t for t, m in messages if m == b"WATCHDOG=1"]


def gaps(messages: list[tuple[float, bytes]]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(pings(messages))]


def silence_then_two(messages: list[tuple[float, bytes]]) -> bool:
    """A silence of 5 s or more between pings, then two more pings."""
    times = pings(messages)
    return any(b - a >= 5.0 for a, b in itertools.pairwise(times[:-2]))


def test_ready_then_watchdog_only_while_the_loop_progresses(
    tmp_path: Path, notify_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", notify_socket.getsockname())
    monkeypatch.setenv("WATCHDOG_USEC", str(WATCHDOG_USEC))
    # The control plane's port, held from the start: bound, not listening (a connection is
    # refused), so no other process can take it before it listens below.
    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    port = hang.getsockname()[1]
    agent = AgentProcess(tmp_path / "node", f"http://127.0.0.1:{port}",
                         enroll_token="el_enroll_unused", poll_s=0.2)  # fmt: skip
    try:
        notify_socket.settimeout(60)
        assert notify_socket.recv(4096) == b"READY=1"
        # Enrolling fails fast (connection refused): the loop backs off but makes progress.
        before = received(notify_socket, lambda got: len(pings(got)) >= 4, 60)
        assert max(gaps(before)) < WATCHDOG_S, gaps(before)
        assert agent.status()["pid"] == agent.proc.pid  # serving all along
        # Now the control plane accepts and never answers: the next pass hangs for the
        # client's 10 s timeout, and the pings stop after 2 s of it.
        hang.listen(16)
        during = received(notify_socket, silence_then_two, 90)
        assert max(gaps(during)) >= 5.0, gaps(during)
        assert agent.proc.poll() is None  # still serving; systemd would restart it
        # The hung pass timed out and the loop goes on: pings again at the interval.
        last = pings(during)
        assert last[-1] - last[-2] < WATCHDOG_S, gaps(during)
    finally:
        hang.close()
        agent.stop()
