"""sd_notify: datagrams on a real unix socket, as systemd receives them."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from edgeloop.agent.systemd import notify, watchdog_interval_s


def test_notify_sends_the_state_to_the_socket_systemd_named(tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        server.settimeout(5)
        assert notify("READY=1\nSTATUS=serving", {"NOTIFY_SOCKET": path}) is True
        assert server.recv(4096) == b"READY=1\nSTATUS=serving"


def test_abstract_socket_names_start_with_at() -> None:
    name = f"edgeloop-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind("\0" + name)
        server.settimeout(5)
        assert notify("WATCHDOG=1", {"NOTIFY_SOCKET": "@" + name}) is True
        assert server.recv(64) == b"WATCHDOG=1"


def test_outside_systemd_or_with_the_socket_gone_nothing_is_sent(tmp_path: Path) -> None:
    assert notify("READY=1", {}) is False
    assert notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "gone.sock")}) is False


def test_the_watchdog_is_pinged_at_half_its_interval_and_only_in_its_process() -> None:
    assert watchdog_interval_s({"WATCHDOG_USEC": "60000000"}) == 30.0
    mine = {"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": str(os.getpid())}
    assert watchdog_interval_s(mine) == 5.0
    assert watchdog_interval_s({**mine, "WATCHDOG_PID": str(os.getpid() + 1)}) is None
    assert watchdog_interval_s({}) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "soon"}) is None
