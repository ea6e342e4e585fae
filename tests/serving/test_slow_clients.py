"""Issue 17 item 6: slow and silent clients are cut off within the bounds, on real sockets, while
a normal client is served; headers past the size bound get 431, connections past the count 503."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.serving.slow_clients import _address, attack, start_server

from edgeloop.core.errors import ConfigError
from edgeloop.serving.connections import ConnectionLimits, Phase, Sweeper, phase_of

HEADER_S, BODY_S, IDLE_S = 1.0, 3.0, 1.0
# The sweeper looks every min(bounds)/4 s; a loaded 2-core runner adds its own delay on top.
SLACK_S = 3.0
ROW = {"features": [0.0, 0.5, 1.0, -1.0]}


@pytest.fixture
def server(linear: Path) -> Iterator[str]:
    proc, url = start_server(
        linear, header_timeout_s=HEADER_S, body_timeout_s=BODY_S, keep_alive_s=IDLE_S,
        max_header_bytes=4096, max_connections=40,
    )  # fmt: skip
    try:
        yield url
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def test_slow_and_silent_clients_are_cut_off_while_a_normal_client_is_served(server: str) -> None:
    held, join = attack(server, {"silent": 5, "slowloris": 5, "slow_body": 5}, 0.2, 30.0)
    codes = []
    with httpx.Client(base_url=server, timeout=10) as client:
        end = time.monotonic() + BODY_S + 0.5
        while time.monotonic() < end:
            codes.append(client.post("/predict", json=ROW).status_code)
            time.sleep(0.05)
    join()
    assert codes and set(codes) == {200}
    bounds = {"silent": HEADER_S, "slowloris": HEADER_S, "slow_body": BODY_S}
    for h in held:
        assert h.open_s is not None, f"{h.kind} still open after 30 s"
        assert bounds[h.kind] <= h.open_s + 0.1 <= bounds[h.kind] + SLACK_S, (h.kind, h.open_s)
        if h.kind != "slow_body":  # cut off before any request was read: 408
            assert h.status == "HTTP/1.1 408 Request Timeout", h
        else:  # the body never came: the app saw a disconnect, nothing to answer
            assert h.status is None, h


def _response(sock: socket.socket) -> bytes:
    """One whole response (headers and Content-Length bytes of body; they may come apart)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(4096)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
    while len(body) < length:
        body += sock.recv(4096)
    return data


def test_an_idle_kept_alive_connection_is_closed_after_the_keep_alive_bound(server: str) -> None:
    with socket.create_connection(_address(server), timeout=10) as sock:
        body = b'{"features": [0, 0, 0, 0]}'
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        assert _response(sock).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        assert sock.recv(4096) == b""  # closed by the server, nothing more said
        assert time.monotonic() - started <= IDLE_S + SLACK_S


def test_a_kept_alive_connection_sending_only_crlf_is_closed_all_the_same(server: str) -> None:
    """Any byte cancels uvicorn's keep-alive timer; CRLFs between requests start no request."""
    with socket.create_connection(_address(server), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _response(sock).startswith(b"HTTP/1.1 200")
        started, sock_open = time.monotonic(), True
        sock.settimeout(0.3)
        while sock_open and time.monotonic() - started < 20:
            try:
                sock.sendall(b"\r\n")
                sock_open = sock.recv(4096) != b""
            except TimeoutError:
                continue
            except OSError:
                sock_open = False
        assert not sock_open
        assert time.monotonic() - started <= IDLE_S + SLACK_S


def test_oversized_headers_are_refused_with_431(server: str) -> None:
    with socket.create_connection(_address(server), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8000)
        answer = sock.recv(4096)  # still incomplete past 4096 bytes
    assert answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large")
    assert httpx.get(server + "/health", timeout=10).status_code == 200


def _hold(server: str, count: int, first: bytes = b"") -> list[socket.socket]:
    held = []
    for _ in range(count):
        sock = socket.create_connection(_address(server), timeout=10)
        if first:
            sock.sendall(first)
        held.append(sock)
        time.sleep(0.005)  # distinct arrival times on the server's side
    time.sleep(0.2)  # every one of them connected there
    return held


def test_at_the_connection_bound_the_longest_waiting_socket_makes_room(server: str) -> None:
    """40 silent sockets fill the bound: a new client is served at once, and the socket that
    waited longest is the one closed (408), not a busy one (nginx's idle-connection reuse)."""
    held = _hold(server, 40)
    try:
        r = httpx.post(server + "/predict", json=ROW, timeout=10)
        assert r.status_code == 200
        held[0].settimeout(5)
        assert held[0].recv(4096).startswith(b"HTTP/1.1 408")
    finally:
        for sock in held:
            sock.close()


def test_at_the_connection_bound_with_every_connection_busy_a_new_one_gets_503(
    server: str,
) -> None:
    """40 connections each in the middle of sending a body (busy, not waiting): a 41st is
    refused with 503 and Retry-After before it can hold anything."""
    body_started = (
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n{"
    )
    held = _hold(server, 40, body_started)
    try:
        with socket.create_connection(_address(server), timeout=10) as extra:
            answer = extra.recv(4096)
        assert answer.startswith(b"HTTP/1.1 503 Service Unavailable")
        assert b"retry-after: 1" in answer
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 10
    while True:  # the server sees the closes and serves again
        try:
            if httpx.post(server + "/predict", json=ROW, timeout=10).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "not served again after the held sockets closed"
        time.sleep(0.1)


class _Transport:
    def __init__(self) -> None:
        self.written = b""
        self.closing = False

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing


class _Cycle:
    def __init__(self, more_body: bool, response_complete: bool) -> None:
        self.more_body, self.response_complete = more_body, response_complete


class _Conn:
    """What the sweeper reads of a connection: uvicorn's cycle, the protocol's two fields."""

    def __init__(self, cycle: _Cycle | None, since: float, reading_headers: bool = False) -> None:
        self.cycle, self.since, self.reading_headers = cycle, since, reading_headers
        self.transport = _Transport()


def test_the_sweeper_closes_each_phase_past_its_own_bound_only() -> None:
    limits = ConnectionLimits(header_timeout_s=1, body_timeout_s=5, keep_alive_s=2)
    done = _Cycle(more_body=False, response_complete=True)
    conns = {
        "first headers late": _Conn(None, 0.0),
        "first headers in time": _Conn(None, 0.5),
        "body in time": _Conn(_Cycle(True, False), 0.0),
        "body late": _Conn(_Cycle(True, False), -6.0),
        "app, however long": _Conn(_Cycle(False, False), -1000.0),
        "idle": _Conn(done, -1000.0),
        "next headers": _Conn(done, -1000.0, reading_headers=True),
    }
    assert [phase_of(c) for c in conns.values()] == [
        Phase.HEADERS, Phase.HEADERS, Phase.BODY, Phase.BODY, Phase.APP, Phase.IDLE,
        Phase.HEADERS,
    ]  # fmt: skip
    sweeper = Sweeper(set(conns.values()), limits)
    assert sweeper.sweep(now=1.01) == 2  # idle and next headers: first seen now
    closed = {name for name, c in conns.items() if c.transport.closing}
    assert closed == {"first headers late", "body late"}
    assert conns["first headers late"].transport.written.startswith(b"HTTP/1.1 408")
    assert conns["body late"].transport.written == b""
    in_time = conns["first headers in time"]
    in_time.cycle, in_time.since = _Cycle(True, False), 1.5  # its headers came: now BODY
    assert sweeper.sweep(now=2.02) == 1  # the next request's headers, 1.01 s after first seen
    assert conns["next headers"].transport.written.startswith(b"HTTP/1.1 408")
    assert sweeper.sweep(now=3.0) == 0 and not conns["idle"].transport.closing
    assert sweeper.sweep(now=3.02) == 1 and conns["idle"].transport.closing  # 2.01 s idle
    assert conns["idle"].transport.written == b""
    assert sweeper.closed == {"headers": 2, "body": 1, "app": 0, "idle": 1}
    assert not in_time.transport.closing


def test_a_new_request_cycle_restarts_the_idle_clock() -> None:
    limits = ConnectionLimits(keep_alive_s=2)
    conn = _Conn(_Cycle(False, True), 0.0)
    sweeper = Sweeper({conn}, limits)
    sweeper.sweep(now=0.0)
    conn.cycle = _Cycle(False, True)  # another request answered in between
    assert sweeper.sweep(now=2.5) == 0
    assert sweeper.sweep(now=4.6) == 1


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"header_timeout_s": 0}, "header_timeout_s=0 (expected > 0 seconds)"),
        ({"body_timeout_s": float("inf")}, "body_timeout_s=inf"),
        ({"max_connections": 0}, "max_connections=0 (expected an integer >= 1)"),
    ],
)
def test_bad_limits_are_refused_naming_the_field(changes: dict[str, float], words: str) -> None:
    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)")):
        ConnectionLimits(**changes)  # type: ignore[arg-type]
