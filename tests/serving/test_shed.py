"""Refusals from the headers (serving/shed.py): a real ``edgeloop serve`` process whose model's
queue is full refuses a request before reading its body; facts, not timings.

The queue is filled by requests that sent their headers and only part of their bodies: the
door admitted them from their headers, and they stay admitted while their bodies are still to
come. A third request then declares an 8 MiB body (under the 16 MiB limit: only admission can
refuse it) and sends none of it; its answer is read before a byte of the body is sent. On the
app's path (``--no-early-refusal``) the same request is admitted: the gate counts a request
only once its body is read.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import orjson
import pytest
from tests.serving.models import make_cnn_onnx
from tests.serving.test_overload import _rejected
from tests.serving.test_serve_process import _ready_info, _start

from edgeloop.serving.admission import Departures
from edgeloop.serving.shed import Door

Address = tuple[str, int]
IO_TIMEOUT_S = 30.0  # only a failing server waits this long: the test then fails, never hangs
DECLARED = 8 * 1024 * 1024


def _body() -> tuple[bytes, dict[str, str]]:
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype("<f4")
    header = orjson.dumps(
        {"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32",
                     "parameters": {"binary_data_size": x.nbytes}}]}
    )  # fmt: skip
    return header + x.tobytes(), {"Inference-Header-Content-Length": str(len(header))}


def _head(address: Address, length: int, headers: dict[str, str]) -> bytes:
    lines = ["POST /v2/models/cnn/infer HTTP/1.1", f"Host: {address[0]}:{address[1]}"]
    lines += [f"{k}: {v}" for k, v in {**headers, "Content-Length": str(length)}.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class Client:
    """One raw keep-alive connection: write bytes, read one whole answer."""

    def __init__(self, address: Address) -> None:
        self.sock = socket.create_connection(address, timeout=IO_TIMEOUT_S)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def answer(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buffer:
            self._read()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        fields = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
        length = int(fields.get("content-length", "0"))
        while len(self.buffer) < length:
            self._read()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(lines[0].split(" ")[1]), fields, body

    def interim(self) -> int:
        """The status of an interim (1xx) answer, which has no body."""
        while b"\r\n\r\n" not in self.buffer:
            self._read()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        return int(head.split(b" ")[1])

    def _read(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buffer += chunk

    def close(self) -> None:
        self.sock.close()


def _serve(tmp_path: Path, *flags: str) -> Iterator[Address]:
    proc = _start(str(make_cnn_onnx(tmp_path / "cnn.onnx")), "--max-queue", "2", *flags)
    try:
        info = _ready_info(proc)
        host, port = info["url"].removeprefix("http://").rsplit(":", 1)
        yield host, int(port)
    finally:
        proc.kill()
        proc.communicate()


@pytest.fixture
def early(tmp_path: Path) -> Iterator[Address]:
    yield from _serve(tmp_path)


@pytest.fixture
def app_path(tmp_path: Path) -> Iterator[Address]:
    yield from _serve(tmp_path, "--no-early-refusal")


def _hold_two(address: Address, body: bytes, headers: dict[str, str]) -> list[Client]:
    """Two requests admitted with half their bodies sent: the model's queue (2) is full.

    Each asks for ``100 Continue`` first: the server sends it when the handler starts reading
    the body, so the request was admitted before this returns (no race with what follows)."""
    held = [Client(address) for _ in range(2)]
    for client in held:
        client.send(_head(address, len(body), {**headers, "Expect": "100-continue"}))
        assert client.interim() == 100
        client.send(body[: len(body) // 2])
    return held


def _metrics(address: Address) -> str:
    client = Client(address)
    client.send(f"GET /metrics HTTP/1.1\r\nHost: {address[0]}\r\n\r\n".encode())
    text = client.answer()[2].decode()
    client.close()
    return text


def test_a_request_past_the_queue_limit_is_refused_before_its_body_is_read(
    early: Address,
) -> None:
    body, headers = _body()
    held = _hold_two(early, body, headers)
    late = Client(early)
    late.send(_head(early, DECLARED, headers))  # 8 MiB declared, not one byte of it sent
    status, fields, answer = late.answer()
    assert status == 429, answer
    assert fields["retry-after"] == "1"
    assert fields["connection"] == "close"  # its body is still to come: no keep-alive
    doc = orjson.loads(answer)
    assert doc["type"] == "QueueFullError"
    assert "before its body was read" in doc["error"] and "--max-queue 2" in doc["error"]
    late.close()
    # The admitted requests are answered once their bodies are in, and release their places.
    for client in held:
        client.send(body[len(body) // 2 :])
        assert client.answer()[0] == 200
    again = Client(early)
    again.send(_head(early, len(body), headers) + body)
    assert again.answer()[0] == 200
    again.close()
    for client in held:
        client.close()
    assert _rejected(_metrics(early)) == {"queue_full": 1.0}


@pytest.mark.parametrize("split", [False, True], ids=["whole", "over-two-writes"])
def test_a_refused_request_with_its_whole_body_keeps_its_connection(
    early: Address, split: bool
) -> None:
    """A body sent whole, or in two parts (the rest under DRAIN_BYTES, as a body split over
    two reads under load): read past, answered on a kept-alive connection."""
    body, headers = _body()
    held = _hold_two(early, body, headers)
    client = Client(early)
    raw = _head(early, len(body), headers) + body
    cut = len(raw) - len(body) // 2 if split else len(raw)
    client.send(raw[:cut])
    client.send(raw[cut:])
    status, fields, _ = client.answer()
    assert status == 429 and "connection" not in fields
    for other in held:
        other.send(body[len(body) // 2 :])
        assert other.answer()[0] == 200
    # The refused request's body was read past, not taken for the next request.
    client.send(_head(early, len(body), headers) + body)
    status, _, answer = client.answer()
    assert status == 200, answer
    assert orjson.loads(answer)["model_name"] == "cnn"
    for c in (client, *held):
        c.close()


def test_a_connection_refused_for_longer_than_the_keep_alive_bound_stays_open(
    early: Address,
) -> None:
    """The connection sweeper closes a connection idle for 5 s (keep-alive); refusals on it
    are not idleness, even though no request cycle of the app's follows its last answer."""
    body, headers = _body()
    raw = _head(early, len(body), headers) + body
    client = Client(early)
    client.send(raw)
    assert client.answer()[0] == 200  # a request cycle, then only refusals on this connection
    held = _hold_two(early, body, headers)
    deadline = time.monotonic() + 6.5  # past the 5 s keep-alive bound and a sweep
    refused = 0
    while time.monotonic() < deadline:
        client.send(raw)
        status, fields, _ = client.answer()
        assert status == 429 and "connection" not in fields
        refused += 1
        time.sleep(0.1)
    assert refused >= 10
    for c in (client, *held):
        c.close()


def test_the_app_path_admits_the_request_once_its_body_is_read(app_path: Address) -> None:
    """The contrast: the gate counts a request only once its body was read and decoded, so
    the same request is admitted (and answered) after its whole body was sent."""
    body, headers = _body()
    held = _hold_two(app_path, body, headers)
    late = Client(app_path)
    late.send(_head(app_path, len(body), headers) + body)
    assert late.answer()[0] == 200
    for client in held:
        client.send(body[len(body) // 2 :])
        assert client.answer()[0] == 200
        client.close()
    late.close()
    assert _rejected(_metrics(app_path)) == {}


# -- the door's pure parts -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "models", "expected"),
    [
        (b"/v2/models/cnn/infer", ["cnn"], ("cnn", "infer")),
        (b"/v2/models/cnn/versions/3/infer?x=1", ["cnn"], ("cnn", "infer")),
        (b"/v2/models/cnn/versions/3/ready", ["cnn"], None),
        (b"/v2/models/cnn/labels", ["cnn"], None),
        (b"/predict", ["cnn"], ("cnn", "predict")),
        (b"/predict", ["a", "b"], None),  # the body names the model: the app decides
        (b"/predict/b", ["a", "b"], ("b", "predict")),
        (b"/predict/labels", ["a"], None),
        (b"/v2/models/c%6En/infer", ["cnn"], None),  # percent-encoded: the app decodes it
    ],
)
def test_the_door_decides_only_inference_requests_it_can_name(
    url: bytes, models: list[str], expected: tuple[str, str] | None
) -> None:
    catalog: Any = SimpleNamespace(models=dict.fromkeys(models))
    door = Door(catalog, metrics=None, delay=None)  # type: ignore[arg-type]
    assert door.target(url) == expected


def test_departures_estimate_the_wait_from_busy_intervals_only() -> None:
    d = Departures(weight=1.0)
    d.left(10.0, still_open=0)  # the last one: the time until the next answer may be idle
    d.left(50.0, still_open=3)
    assert d.interval_s == 0.0 and d.wait_s(10) == 0.0
    d.left(50.004, still_open=2)  # 4 ms between two answers while others were admitted
    assert d.wait_s(10) == pytest.approx(0.04)
