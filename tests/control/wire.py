"""Raw HTTP/1.1 over a socket, for requests no well-behaved client sends: a body larger than the
server allows, a chunked body streamed until the server hangs up, headers sent one byte at a
time. And the memory of a process (``/proc``), to see that such requests cost it nothing."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

TIMEOUT_S = 30.0


def connect(url: str, timeout_s: float = TIMEOUT_S) -> socket.socket:
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout_s)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def head(method: str, path: str, headers: dict[str, str]) -> bytes:
    fields = [f"{k}: {v}" for k, v in headers.items()]
    lines = [f"{method} {path} HTTP/1.1", "Host: control", *fields]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """The status, headers (lower-case names) and body of one answer (Content-Length framed).

    Raises:
        ConnectionError: the server closed the connection before a whole answer came.
    """
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} bytes of answer: {data[:200]!r}")
        data += chunk
    top, _, rest = data.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status, headers, rest[:length]


def closed_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closed ``sock`` (reading and dropping what it sends), or None
    when it is still open after ``seconds``."""
    start = time.monotonic()
    sock.settimeout(0.2)
    while time.monotonic() - start < seconds:
        try:
            if not sock.recv(65536):
                return time.monotonic() - start
        except TimeoutError:
            continue
        except ConnectionError:
            return time.monotonic() - start
    return None


def stream_chunked(sock: socket.socket, total: int, chunk: int = 1 << 20) -> int:
    """Send ``total`` bytes as a chunked body (then its end) until the server stops reading;
    the bytes sent."""
    piece = b"x" * chunk
    sent = 0
    try:
        while sent < total:
            size = min(chunk, total - sent)
            sock.sendall(f"{size:x}\r\n".encode() + piece[:size] + b"\r\n")
            sent += size
        sock.sendall(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError, TimeoutError):
        pass
    return sent


def memory_kb(pid: int) -> dict[str, int]:
    """``VmRSS`` (now) and ``VmHWM`` (the peak so far) of a process, in kB."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            found[name] = int(value.split()[0])
    return found
