"""Refuse an inference request from its headers: before its body is read, before any task.

Under overload an answer's cost decides how much gets served: at twice its capacity a server
refuses as many requests as it serves, so if a refusal costs a fraction ``r`` of an answer, the
share of its capacity left for answers is ``(1 - 2r) / (1 - r)``; 0.9 of it needs ``r <= 0.09``.
A refusal made by the app costs nearly an answer's HTTP work: an ASGI task, the framework's
middleware, a request object, an exception, a response sent in two writes; and it waits in the
event loop's ready queue behind the admitted requests, so it came 160-200 ms after it was sent
(docs/reliability.md, "Overload"). :class:`Door` decides in the HTTP parser's
``on_headers_complete`` callback, from the request line and the counts below, and a refused
request gets its whole answer in one write from that callback: no task, no scope routing, no
body read (what arrives of it is parsed and dropped), no framework layer.

A request is *admitted* from its headers until its handler returns (reading its body, waiting
in the loop or a model's queue, running, answering). Per model at most ``--max-queue`` are
admitted (the gate's limit, now counted from the headers on; the gate still counts what
reaches it another way: a cascade's escalations, pipelined requests), and none whose
expected wait, admitted requests x the measured time between answers
(:class:`~edgeloop.serving.admission.Departures`), is over the queue delay limit now
(:meth:`~edgeloop.serving.admission.QueueDelay.limit_s`: the budget during a burst, a quarter
of it while a queue stands). Both are answered 429 with ``Retry-After``, counted as
the app's refusals are (``edgeloop_rejected_total{reason="queue_full"|"queue_delay"}``).

Only ``POST`` to an inference route of a served model on a connection with no other request
in progress is decided here; anything else (pipelined requests, unknown models, percent-encoded
paths, ``/predict`` without a model on a multi-model server) goes to the app as before, whose
own checks (:mod:`edgeloop.serving.front`, the gates) still hold. A refused request keeps its
connection when its body is complete or nearly (:data:`DRAIN_BYTES` still to come: under load a
12 KiB body often arrives over two reads); one with more of its body still to come, or waiting
for ``100 Continue``, is answered at once with ``connection: close``, and its connection is
closed once the body is in (a close with unread data would reset the connection, and the
client might never read the answer; the connection sweeper bounds how long that takes).
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from edgeloop.serving.admission import Departures, QueueDelay
from edgeloop.serving.catalog import Catalog
from edgeloop.serving.metrics import ServerMetrics

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]

# The scope key naming the model a request was admitted for by the door (released when its
# handler returns).
ADMITTED = "edgeloop.admitted"
# A refused request whose body has at most this much still to come is read past and answered
# on a kept-alive connection (a body split over reads, as under load); a longer one is answered
# at once and its connection closed once the body is in.
DRAIN_BYTES = 64 * 1024
_HINT = (
    "retry after the Retry-After seconds; the server is past its capacity (raise --max-queue "
    "or --max-queue-delay-ms to trade latency for fewer refusals, or add servers)"
)


class Door:
    """Counts admitted inference requests per model and refuses past the limits (module doc).

    ``refused`` counts this door's refusals by reason; ``admitted`` what it let in.
    """

    def __init__(self, catalog: Catalog, metrics: ServerMetrics, delay: QueueDelay) -> None:
        self.catalog = catalog
        self.metrics = metrics
        self.delay = delay
        self.departures = Departures()
        self.open: dict[str, int] = {}
        self.total = 0
        self.admitted = 0
        self.refused = {"queue_full": 0, "queue_delay": 0}
        self._counters: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        self._extra: list[tuple[bytes, bytes]] | None = None
        self._answers: dict[tuple[str, int, int], bytes] = {}

    def target(self, url: bytes) -> tuple[str, str] | None:
        """(model, endpoint) of an inference request line's target, or None: not decided here.

        ``/v2/models/{m}[/versions/{v}]/infer`` and ``/predict[/{m}]`` (``/predict`` alone
        names the only model, if there is one).
        """
        path = url.partition(b"?")[0]
        if b"%" in path:
            return None  # percent-encoded: the app decodes it
        parts = path.split(b"/")
        n = len(parts)
        if n in (5, 7) and parts[1] == b"v2" and parts[2] == b"models" and parts[-1] == b"infer":
            if n == 5 or parts[4] == b"versions":
                return parts[3].decode("latin-1"), "infer"
            return None
        if n == 2 and parts[1] == b"predict" and len(self.catalog.models) == 1:
            return next(iter(self.catalog.models)), "predict"
        if n == 3 and parts[1] == b"predict" and parts[2] not in (b"", b"labels"):
            return parts[2].decode("latin-1"), "predict"
        return None

    def decide(
        self, name: str, endpoint: str, now: float, extra: list[tuple[bytes, bytes]]
    ) -> bytes | None:
        """Admit a request for model ``name`` (None) or refuse it: the whole answer to write
        (``extra``: the server's default headers, a list uvicorn replaces every second).

        An unknown model is admitted: the app answers it (404).
        """
        model = self.catalog.models.get(name)
        if model is None:
            return None
        gate = model.gate
        if self.open.get(name, 0) >= gate.limit:
            self._count(name, endpoint, "queue_full", gate)
            return self._full_answer(name, gate.limit, gate.retry_after_s(), extra)
        if self.delay.budget_s > 0:
            wait_s = self.departures.wait_s(self.total)
            limit_s = self.delay.limit_s(now)
            if wait_s > limit_s:
                self._count(name, endpoint, "queue_delay", gate)
                body = _body(
                    f"{self.total} requests are admitted ahead of this one, about "
                    f"{wait_s * 1000:.0f} ms of work at {self.departures.interval_s * 1000:.2f} "
                    f"ms between answers, above the queue delay limit of {limit_s * 1000:g} ms "
                    f"(--max-queue-delay-ms {self.delay.budget_s * 1000:g}); request for model "
                    f"{name!r} refused before its body was read",
                    "QueueDelayError",
                )
                return answer(body, gate.retry_after_s(), False, extra)
        return None

    def _full_answer(
        self, name: str, limit: int, retry_s: int, extra: list[tuple[bytes, bytes]]
    ) -> bytes:
        """The queue-full answer, built once per model, limit, Retry-After and second."""
        if extra is not self._extra:
            self._extra, self._answers = extra, {}
        key = (name, limit, retry_s)
        found = self._answers.get(key)
        if found is None:
            body = _body(
                f"model {name!r} has as many requests admitted (sending their bodies, waiting "
                f"or running) as its queue limit (--max-queue {limit}); request refused before "
                "its body was read",
                "QueueFullError",
            )
            found = self._answers[key] = answer(body, retry_s, False, extra)
        return found

    def enter(self, name: str) -> None:
        """Count one request admitted for model ``name``."""
        self.open[name] = self.open.get(name, 0) + 1
        self.total += 1
        self.admitted += 1

    def leave(self, name: str, now: float) -> None:
        """One admitted request's handler returned at ``now``."""
        self.open[name] = max(0, self.open.get(name, 0) - 1)
        self.total = max(0, self.total - 1)
        self.departures.left(now, self.total)

    def wrap(self, app: ASGIApp, name: str) -> ASGIApp:
        """``app`` for one request admitted here: its handler's return releases it."""

        async def admitted(scope: Scope, receive: Any, send: Any) -> None:
            try:
                await app(scope, receive, send)
            finally:
                self.leave(name, time.perf_counter())

        return admitted

    def _count(self, name: str, endpoint: str, reason: str, gate: Any) -> None:
        """Count a refusal as the app counts its own (label lookups done once per kind)."""
        self.refused[reason] += 1
        gate.refused += 1
        key = (name, endpoint, reason)
        children = self._counters.get(key)
        if children is None:
            error = "QueueFullError" if reason == "queue_full" else "QueueDelayError"
            children = self._counters[key] = (
                self.metrics.rejected.labels(name, reason),
                self.metrics.errors.labels(name, "", error),
            )
        children[0].inc()
        children[1].inc()
        self.metrics.observe((name, "", "", "primary"), endpoint, 429, None)


def _body(message: str, kind: str) -> bytes:
    return orjson.dumps({"error": message, "type": kind, "hint": _HINT})


def answer(body: bytes, retry_after_s: int, close: bool, extra: list[tuple[bytes, bytes]]) -> bytes:
    """A whole 429 answer (status line, headers, ``body``) to write in one call; ``extra``:
    the server's default headers (``date``, ``server``)."""
    head = [
        b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\nretry-after: ",
        str(retry_after_s).encode(),
        b"\r\ncontent-length: ",
        str(len(body)).encode(),
        b"\r\n",
    ]
    for name, value in extra:
        head += [name, b": ", value, b"\r\n"]
    if close:
        head.append(b"connection: close\r\n")
    head += [b"\r\n", body]
    return b"".join(head)


def door_protocol(base: type[Any], door: Door) -> type[Any]:
    """``base`` (uvicorn's httptools protocol, or a subclass of it) deciding inference requests
    at ``door`` when their headers are complete (module docstring). Pass it to
    ``uvicorn.Config(http=...)``, inside :func:`edgeloop.serving.connections.bounded_protocol`.
    """
    perf_counter = time.perf_counter

    class DoorProtocol(base):  # type: ignore[misc]
        refusing: bytes | None = None  # a refused request's answer, until its body is in
        answered = False  # ... already written (its body was still coming: close after it)
        body_seen = 0  # bytes of the refused request's body parsed past so far

        def on_headers_complete(self) -> None:
            cycle = self.cycle
            if (
                (cycle is None or cycle.response_complete)
                and not self.pipeline
                and self.parser.get_method() == b"POST"
                and not self.parser.should_upgrade()
            ):
                found = door.target(self.url)
                if found is not None:
                    self.refusing = door.decide(
                        found[0], found[1], perf_counter(), self.server_state.default_headers
                    )
                    if self.refusing is not None:
                        self.body_seen = 0
                        # The last request cycle is over: without it, the connection sweeper
                        # times this connection from these headers (a refusal is progress),
                        # not from when it first saw that cycle's answer sent.
                        self.cycle: Any = None
                        return
                    self.scope[ADMITTED] = found[0]
                    door.enter(found[0])
            super().on_headers_complete()

        def _start_asgi_task(self, cycle: Any, app: Any) -> None:
            name = cycle.scope.get(ADMITTED)
            super()._start_asgi_task(cycle, app if name is None else door.wrap(app, name))

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if (
                self.refusing is not None
                and not self.answered
                and (self.expect_100_continue or self._body_left() > DRAIN_BYTES)
                and not self.transport.is_closing()
            ):
                # Much of the body is still to come (or the client waits for a 100 before
                # sending it): answer now, close once it is in.
                self.transport.write(_closing(self.refusing))
                self.answered = True

        def _body_left(self) -> float:
            """Bytes of the refused request's body still to come (chunked: unknown, inf)."""
            for name, value in self.headers:
                if name == b"content-length":
                    return int(value) - self.body_seen if value.isdigit() else math.inf
            return math.inf

        def on_body(self, body: bytes) -> None:
            if self.refusing is None:
                super().on_body(body)
            else:
                self.body_seen += len(body)

        def on_message_complete(self) -> None:
            if self.refusing is None:
                super().on_message_complete()
                return
            refusing, self.refusing = self.refusing, None
            keep_alive = self.parser.should_keep_alive() and not self.answered
            if not self.answered:
                self.transport.write(refusing if keep_alive else _closing(refusing))
            self.answered = False
            self.server_state.total_requests += 1
            if not keep_alive:
                self.transport.close()
            else:  # as uvicorn does after an answer: close it if nothing more comes
                self._keep_alive()

        def _keep_alive(self) -> None:
            self.timeout_keep_alive_task: Any = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )

    DoorProtocol.__name__ = DoorProtocol.__qualname__ = f"Door{base.__name__}"
    return DoorProtocol


def _closing(raw: bytes) -> bytes:
    return raw.replace(b"\r\n\r\n", b"\r\nconnection: close\r\n\r\n", 1)
