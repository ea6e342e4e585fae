"""Slow and silent clients are cut off within the control plane's bounds (issue 17, item 6).

Partial request lines, partial bodies and silent sockets stayed open for minutes before (500
idle plus 400 slow sockets were held). Against a real ``edgeloop control`` with a 1 s header
deadline, a 2 s body deadline and at most 20 connections, over raw sockets.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from tests.control import wire
from tests.control.process import ControlProcess, control_process

HEADER_S, BODY_S, MAX_CONNECTIONS = 1.0, 2.0, 20
SLACK_S = 2.0  # a loaded CI machine's scheduling


@pytest.fixture(scope="module")
def proc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlProcess]:
    home = tmp_path_factory.mktemp("slow") / "home"
    flags = ["--header-timeout-s", str(HEADER_S), "--body-timeout-s", str(BODY_S),
             "--max-connections", str(MAX_CONNECTIONS)]  # fmt: skip
    with control_process(home, None, *flags) as running:
        yield running


def _answer_within(sock: socket.socket, seconds: float) -> tuple[int | None, float]:
    """The status the server answered with (None: it closed without one) and when."""
    start = time.monotonic()
    sock.settimeout(seconds)
    try:
        status, _, _ = wire.read_answer(sock)
        return status, time.monotonic() - start
    except ConnectionError:
        return None, time.monotonic() - start
    except TimeoutError:
        raise AssertionError(f"still open after {seconds} s") from None


def test_a_silent_socket_is_closed(proc: ControlProcess) -> None:
    with wire.connect(proc.url) as sock:
        closed = wire.closed_within(sock, HEADER_S + SLACK_S)
        assert closed is not None, "a socket that sent nothing was still open"
        assert closed >= HEADER_S * 0.9


def test_a_partial_request_line_is_answered_408(proc: ControlProcess) -> None:
    with wire.connect(proc.url) as sock:
        sock.sendall(b"GET /healthz HT")
        status, took = _answer_within(sock, HEADER_S + SLACK_S)
        assert status == 408
        assert took >= HEADER_S * 0.9
        assert wire.closed_within(sock, SLACK_S) is not None


def test_headers_sent_a_byte_at_a_time_are_cut_off(proc: ControlProcess) -> None:
    """The deadline is for the whole header block, not between two bytes."""
    request = wire.head("GET", "/healthz", {"X-Slow": "y" * 200})
    with wire.connect(proc.url) as sock:
        start = time.monotonic()
        try:
            for byte in request:
                sock.sendall(bytes([byte]))
                time.sleep(0.05)  # 200+ bytes: ~10 s in all, far past the deadline
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert time.monotonic() - start < HEADER_S + SLACK_S + 1


def test_a_trickle_of_empty_lines_between_requests_is_cut_off(proc: ControlProcess) -> None:
    """A lone CRLF cancels uvicorn's keep-alive timer and starts no request: it held the
    connection open for as long as the client kept sending them."""
    with wire.connect(proc.url) as sock:
        sock.sendall(wire.head("GET", "/healthz", {}))
        assert wire.read_answer(sock)[0] == 200
        start = time.monotonic()
        with contextlib.suppress(OSError):
            while time.monotonic() - start < HEADER_S + SLACK_S + 2:
                sock.sendall(b"\r\n")
                time.sleep(0.2)
        assert time.monotonic() - start < HEADER_S + SLACK_S + 1


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_a_body_that_trickles_in_is_answered_408(proc: ControlProcess, framing: str) -> None:
    headers = {"Content-Type": "application/json"}
    headers |= (
        {"Content-Length": "1000"} if framing == "length" else {"Transfer-Encoding": "chunked"}
    )
    with wire.connect(proc.url) as sock:
        sock.sendall(wire.head("POST", "/api/v1/enroll", headers))
        start = time.monotonic()
        stop = threading.Event()

        def trickle() -> None:
            while not stop.is_set():
                try:
                    sock.sendall(b"1\r\n \r\n" if framing == "chunked" else b" ")
                except OSError:
                    return
                time.sleep(0.2)

        sender = threading.Thread(target=trickle)
        sender.start()
        try:
            status, _ = _answer_within(sock, BODY_S + SLACK_S)
        finally:
            stop.set()
            sender.join()
        assert status == 408
        assert time.monotonic() - start < BODY_S + SLACK_S


def test_connections_past_the_limit_are_refused_and_the_rest_still_served(
    proc: ControlProcess,
) -> None:
    socks = [wire.connect(proc.url) for _ in range(MAX_CONNECTIONS + 10)]
    try:
        refused = 0
        for sock in socks[MAX_CONNECTIONS:]:
            sock.settimeout(HEADER_S / 2)
            try:
                status, _, _ = wire.read_answer(sock)
                refused += status == 503
            except (TimeoutError, ConnectionError):
                pass
        assert refused >= 5, refused
    finally:
        for sock in socks:
            sock.close()
    time.sleep(0.2)
    assert httpx.get(f"{proc.url}/healthz", timeout=10).status_code == 200


def test_the_connection_limit_stays_below_the_open_file_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A limit above the descriptors left would never be reached: accept() fails first."""
    import resource

    from edgeloop.control.limits import MAX_CONNECTIONS, wire_limits

    monkeypatch.setattr(resource, "getrlimit", lambda _: (1024, 4096))
    assert wire_limits().max_connections == 1024 - 256
    assert wire_limits(max_connections=5000).max_connections == 5000  # as asked
    monkeypatch.setattr(resource, "getrlimit", lambda _: (1 << 20, 1 << 20))
    assert wire_limits().max_connections == MAX_CONNECTIONS
