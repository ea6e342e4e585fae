"""MQTT sensor routes at run time: subscribe, decode, infer, publish the result or dead-letter it.

:class:`RouteRunner` holds one connection to the broker (aiomqtt over paho-mqtt 2, MQTT v5) and
runs every route of a :func:`edgeloop.agent.route_spec.parse_routes` table on it:

1. each message on a topic a route's filter matches is decoded
   (:mod:`edgeloop.agent.route_payload`) and handed to ``infer(model, features)``, the agent's
   batching runtime; messages of one route are inferred concurrently (up to ``max_in_flight``), so
   the runtime can batch them;
2. results are published in the order the messages came in, per route, to the route's THEN topic;
3. a message that cannot be decoded, names a model the runtime does not have, has the wrong shape,
   or whose inference fails goes to ``<prefix>/deadletter`` with the reason and its bytes. A route
   never stops for a bad message.

The connection is kept up with back-off. The session is persistent (a stable client id,
``clean_start`` off, a session expiry), so the broker keeps QoS 1 messages for the runner while it
is reconnecting. One client object serves every reconnect, so messages it took in before a
disconnect are still routed, and results without a PUBACK are published again, first and in order
(results are at least once). Paho acknowledges a message when it arrives: a killed runner process
loses what it had taken in and not yet answered. Subscriptions use
MQTT v5's *no local*, so a route never receives what the runner itself published (no loops when a
THEN topic matches a FROM filter).

Ground truth over MQTT: with a ``labels`` callable the runner also subscribes to
``<prefix>/labels`` and hands each message's bytes to it (the node's server applies them as
``POST /v2/models/{m}/labels`` would: ``{"model": NAME, "request_id": ID, "label": CLASS}`` or
``{"model": NAME, "labels": [...]}``); outcomes are counted in ``label_counts`` and the last
refusal kept in ``last_label_error``. A routed message's source id (``"id"``) is its request id
for that join: it is set in :data:`SOURCE_ID` while the message is inferred.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from edgeloop.agent.route_payload import deadletter_document, decode, result_document
from edgeloop.agent.route_spec import RouteSpec, check_filter
from edgeloop.core.errors import ConfigError, DataError, EdgeError, require

Infer = Callable[[str, np.ndarray], Awaitable[tuple[Any, Any]]]
"""``infer(model, features) -> (outputs, model_version)``; raises ``NotFoundError`` for a model it
does not serve and ``EdgeError`` (or anything) for features it cannot take."""
Labels = Callable[[bytes], dict[str, Any]]
"""``labels(body) -> {"applied": n, "unknown": n, ...}``; raises ``EdgeError`` when refused."""
# The source id of the message being inferred (task-local: each message has its own task).
SOURCE_ID: ContextVar[str | None] = ContextVar("edgeloop_route_source_id", default=None)


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    """How the runner talks to the broker; validated on construction."""

    host: str = "127.0.0.1"
    port: int = 1883
    client_id: str | None = None  # stable across restarts: the broker keeps the session
    deadletter_prefix: str = "edgeloop"
    qos: int = 1
    keepalive_s: int = 30
    session_expiry_s: int = 3600
    reconnect_initial_s: float = 0.2
    reconnect_max_s: float = 10.0
    max_in_flight: int = 64  # per route: messages inferred ahead of the one being published
    publish_timeout_s: float = 10.0  # no PUBACK within this: the connection is treated as lost
    max_payload_bytes: int = 1 << 20  # larger messages are dead-lettered (their first bytes kept)
    username: str | None = None
    password: str | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.qos not in (0, 1, 2):
            problems.append(f"qos {self.qos} is not 0, 1 or 2")
        if not 0 < self.port < 65536:
            problems.append(f"port {self.port} is not 1..65535")
        if min(self.max_in_flight, self.keepalive_s, self.max_payload_bytes) < 1:
            problems.append("max_in_flight, keepalive_s and max_payload_bytes must be >= 1")
        if self.session_expiry_s < 0:
            problems.append(f"session_expiry_s {self.session_expiry_s} is negative")
        if not 0 < self.reconnect_initial_s <= self.reconnect_max_s:
            problems.append("need 0 < reconnect_initial_s <= reconnect_max_s")
        if check_filter(self.deadletter_prefix) is not None or any(
            c in self.deadletter_prefix for c in "+#"
        ):
            problems.append(f"dead-letter prefix {self.deadletter_prefix!r} is not a topic")
        if problems:
            raise ConfigError("MQTT settings: " + "; ".join(problems))

    @property
    def deadletter_topic(self) -> str:
        return f"{self.deadletter_prefix.rstrip('/')}/deadletter"


@dataclass
class RouteCounters:
    """Per route: messages received, results published, messages dead-lettered, and errors
    (inference that failed with something other than an ``EdgeError``: a runtime fault, still
    dead-lettered)."""

    received: int = 0
    published: int = 0
    dead_lettered: int = 0
    errors: int = 0


@dataclass(frozen=True, slots=True)
class _Outgoing:
    topic: str
    payload: bytes
    deadletter: bool
    correlation: bytes | None


class RouteRunner:
    """Runs a route table against one broker until its ``stop`` event is set."""

    def __init__(
        self,
        routes: Sequence[RouteSpec],
        infer: Infer,
        config: BrokerConfig | None = None,
        *,
        registry: Any = None,
        labels: Labels | None = None,
    ) -> None:
        """``registry``: a ``prometheus_client.CollectorRegistry`` for the metrics (the agent's);
        a private one by default. ``labels``: where label messages go (module docstring).

        Raises:
            ConfigError: no routes, or two with one name.
            MissingDependencyError: the ``mqtt`` extra is not installed.
        """
        if not routes or len({r.name for r in routes}) != len(routes):
            raise ConfigError(
                f"a route runner needs routes with distinct names, got {[r.name for r in routes]}"
            )
        self._mqtt = require("aiomqtt", "mqtt", "MQTT routes")
        prometheus = require("prometheus_client", "mqtt", "MQTT route metrics")
        self.routes = tuple(routes)
        self.infer = infer
        self.config = config or BrokerConfig()
        self.client_id = self.config.client_id or f"edgeloop-routes-{uuid.uuid4().hex[:12]}"
        self.counters = {r.name: RouteCounters() for r in self.routes}
        self.unrouted = 0
        self.labels = labels
        self.labels_topic = f"{self.config.deadletter_prefix}/labels"
        self.label_counts = {"applied": 0, "unknown": 0, "refused": 0}
        self.last_label_error: str | None = None
        self.reconnects = 0
        self.last_error: str | None = None
        self.connected = asyncio.Event()
        self._was_connected = False
        self._queues: dict[str, asyncio.Queue[asyncio.Task[_Outgoing]]] = {
            r.name: asyncio.Queue(maxsize=self.config.max_in_flight) for r in self.routes
        }
        # a result taken from its queue but not yet handed to paho (survives a reconnect)
        self._held: dict[str, asyncio.Task[_Outgoing]] = {}
        # results handed to paho, oldest first, until their PUBACK (survives a reconnect)
        self._sent: dict[str, deque[tuple[_Outgoing, asyncio.Task[None]]]] = {
            r.name: deque() for r in self.routes
        }
        self._moved = {r.name: asyncio.Event() for r in self.routes}  # sent grew or shrank
        self._taken = asyncio.Event()  # a sender took a message off its route's queue
        self._next: asyncio.Future[Any] | None = None  # the reader's pending take
        self.registry = registry or prometheus.CollectorRegistry()
        self._messages = prometheus.Counter(
            "edgeloop_mqtt_route_messages",
            "MQTT route messages by outcome (received, published, dead_lettered, error)",
            ["route", "outcome"],
            registry=self.registry,
        )
        self._latency = prometheus.Histogram(
            "edgeloop_mqtt_route_latency_seconds",
            "From a message's arrival to its inference result",
            ["route"],
            registry=self.registry,
        )

    def snapshot(self) -> dict[str, dict[str, int]]:
        """The counters per route as plain dicts."""
        return {name: asdict(c) for name, c in self.counters.items()}

    def _count(self, route: str, outcome: str) -> None:
        setattr(self.counters[route], outcome, getattr(self.counters[route], outcome) + 1)
        self._messages.labels(route, outcome.removesuffix("s")).inc()

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, route, reconnect with back-off on any broker failure, until ``stop`` is set.

        Never raises for a broker that is down or a bad message.
        """
        # One client for every reconnect: messages it took in (and acked) before a disconnect
        # stay in its queue, and paho re-sends its unacknowledged QoS 1 publishes.
        client = self._client()
        failures = 0
        while not stop.is_set():
            try:
                await self._session(client, stop)
            except self._mqtt.MqttError as exc:
                self.connected.clear()
                self.last_error = f"{type(exc).__name__}: {exc}"
                failures = 0 if self._was_connected else failures + 1
                self.reconnects += 1
                cfg = self.config
                delay = min(cfg.reconnect_max_s, cfg.reconnect_initial_s * 2.0 ** min(failures, 30))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay)
        self.connected.clear()

    def _client(self) -> Any:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        connect = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        connect.SessionExpiryInterval = self.config.session_expiry_s
        mqtt = self._mqtt
        return mqtt.Client(
            self.config.host,
            self.config.port,
            identifier=self.client_id,
            protocol=mqtt.ProtocolVersion.V5,
            clean_start=False,  # resume the broker's session: it kept our QoS 1 messages
            properties=connect,
            keepalive=self.config.keepalive_s,
            username=self.config.username,
            password=self.config.password,
            timeout=self.config.publish_timeout_s,
        )

    async def _session(self, client: Any, stop: asyncio.Event) -> None:
        from paho.mqtt.subscribeoptions import SubscribeOptions

        self._was_connected = False
        async with client:
            filters = sorted({r.source for r in self.routes})
            if self.labels is not None:
                filters.append(self.labels_topic)
            options = SubscribeOptions(qos=self.config.qos, noLocal=True)
            await client.subscribe([(f, options) for f in filters])
            self._was_connected = True
            self.connected.set()
            await self._serve(client, stop)

    async def _serve(self, client: Any, stop: asyncio.Event) -> None:
        dispatch = asyncio.create_task(self._dispatch(client))
        for route in self.routes:
            self._resend(client, route.name)
        publishers = [asyncio.create_task(self._send(client, r.name)) for r in self.routes]
        publishers += [asyncio.create_task(self._confirm(r.name)) for r in self.routes]
        stopping = asyncio.create_task(stop.wait())
        tasks = [dispatch, *publishers, stopping, asyncio.create_task(self._lost(client))]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if stopping in done:  # finish what was received, briefly, then leave
                dispatch.cancel()
                queues = [q.join() for q in self._queues.values()]
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.gather(*queues), timeout=5.0)
        finally:
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, Exception):  # MqttError: reconnect; anything else is a bug
                raise result

    async def _lost(self, client: Any) -> None:
        """Raise ``MqttError`` as soon as the connection drops.

        aiomqtt only tells a reader of ``client.messages``, and the dispatcher may be waiting for
        room in a route's queue, with the publishers waiting for PUBACKs until their timeout; so
        this watches aiomqtt's disconnect future (no public API for it in aiomqtt 2.5).
        """
        disconnected: Any = getattr(client, "_disconnected", None)
        if not isinstance(disconnected, asyncio.Future):
            await asyncio.Event().wait()  # another aiomqtt: rely on the readers and timeouts
        try:
            await asyncio.shield(disconnected)
        except self._mqtt.MqttError:
            raise
        except Exception as exc:
            raise self._mqtt.MqttError(f"connection lost: {exc}") from exc
        raise self._mqtt.MqttError("disconnected")

    async def _dispatch(self, client: Any) -> None:
        messages = aiter(client.messages)
        queues = self._queues.values()
        if self._next is not None:  # a message the last session's reader got as it was stopped
            leftover, self._next = self._next, None
            with contextlib.suppress(self._mqtt.MqttError):
                self._route(await leftover)  # resolves at once: that connection is gone
        while True:
            # Room first, then take a message and queue it without awaiting: a cancel (the
            # connection dropped) can never fall between taking a message and queueing it.
            while any(q.full() for q in queues):
                self._taken.clear()
                await self._taken.wait()
            # aiomqtt's reader drops the message it had just taken when it is cancelled, so it
            # runs as its own task that a cancel of this one does not reach (kept in _next).
            self._next = asyncio.ensure_future(anext(messages))
            self._next.add_done_callback(lambda f: f.cancelled() or f.exception())
            message = await asyncio.shield(self._next)
            self._next = None
            self._route(message)

    def _route(self, message: Any) -> None:
        """Count a message on every route it matches and start its work (never awaits)."""
        arrived = time.perf_counter()
        topic = str(message.topic.value)
        if self.labels is not None and topic == self.labels_topic:
            self._label(_as_bytes(message.payload))
            return
        matched = [r for r in self.routes if r.matches(topic)]
        if not matched:
            self.unrouted += 1  # a filter left over in a persistent session
            return
        payload = _as_bytes(message.payload)
        props = message.properties
        content_type = getattr(props, "ContentType", None)
        user = dict(getattr(props, "UserProperty", None) or [])
        correlation = getattr(props, "CorrelationData", None)
        for route in matched:
            self._count(route.name, "received")
            seq = self.counters[route.name].received
            work = self._handle(
                route, topic, payload, (content_type, user, correlation), arrived, seq
            )
            self._queues[route.name].put_nowait(asyncio.create_task(work))

    def _label(self, body: bytes) -> None:
        """Apply one label message (synchronous, bounded by the payload limit); never raises."""
        if self.labels is None:
            return
        try:
            if len(body) > self.config.max_payload_bytes:
                raise DataError(f"label payload of {len(body)} bytes is over the route limit")
            outcome = self.labels(body)
        except EdgeError as exc:
            kind = "unknown" if exc.http_status == 404 else "refused"
            self.label_counts[kind] += 1
            self.last_label_error = exc.message
            return
        self.label_counts["applied"] += int(outcome.get("applied", 0))
        self.label_counts["unknown"] += int(outcome.get("unknown", 0))

    async def _handle(
        self,
        route: RouteSpec,
        topic: str,
        payload: bytes,
        props: tuple[str | None, dict[str, str], bytes | None],
        arrived: float,
        seq: int,
    ) -> _Outgoing:
        content_type, user, correlation = props
        source_id = user.get("id")
        try:
            if len(payload) > self.config.max_payload_bytes:
                raise DataError(
                    f"payload of {len(payload)} bytes is over the route limit of "
                    f"{self.config.max_payload_bytes} bytes",
                    hint="publish smaller messages or raise BrokerConfig.max_payload_bytes",
                )
            decoded = decode(payload, content_type, user)
            source_id = decoded.source_id
            SOURCE_ID.set(source_id)  # this message's task only: the join's request id
            outputs, version = await self.infer(route.model, decoded.features)
            latency_s = time.perf_counter() - arrived
            body = result_document(
                route=route.name,
                model=route.model,
                model_version=version,
                outputs=outputs,
                latency_ms=round(latency_s * 1000, 3),
                source_id=source_id,
                source_topic=topic,
                seq=seq,
            )
            target = route.render(topic)
            self._latency.labels(route.name).observe(latency_s)
            return _Outgoing(target, body, False, correlation)
        except EdgeError as exc:
            reason, error = exc.message, type(exc).__name__
        except Exception as exc:  # the runtime failed on this message; the route goes on
            reason, error = f"{type(exc).__name__}: {exc}", type(exc).__name__
            self._count(route.name, "errors")
        letter = deadletter_document(
            route=route.name,
            reason=reason,
            error=error,
            source_topic=topic,
            source_id=source_id,
            payload=payload[: self.config.max_payload_bytes],
            payload_bytes=len(payload),
            at=datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        )
        return _Outgoing(self.config.deadletter_topic, letter, True, correlation)

    def _resend(self, client: Any, route: str) -> None:
        """Publish again, first and in order, what the last connection left unconfirmed."""
        sent = self._sent[route]
        for i, (out, task) in enumerate(sent):
            if not task.done() or task.cancelled() or task.exception() is not None:
                sent[i] = (out, self._spawn(client, out))

    async def _send(self, client: Any, route: str) -> None:
        """Hand results to paho in arrival order, up to ``max_in_flight`` unconfirmed."""
        queue, sent, moved = self._queues[route], self._sent[route], self._moved[route]
        while True:
            while len(sent) >= self.config.max_in_flight:
                moved.clear()
                await moved.wait()
            if route not in self._held:
                self._held[route] = await queue.get()
                self._taken.set()
            out = await asyncio.shield(self._held[route])  # a cancel here must not reach it
            sent.append((out, self._spawn(client, out)))
            del self._held[route]
            moved.set()

    async def _confirm(self, route: str) -> None:
        """Count results in order as their PUBACKs come back."""
        queue, sent, moved = self._queues[route], self._sent[route], self._moved[route]
        while True:
            while not sent:
                moved.clear()
                await moved.wait()
            out, task = sent[0]
            await asyncio.shield(task)  # MqttError ends the session; the entry stays for a resend
            sent.popleft()
            moved.set()
            queue.task_done()
            self._count(route, "dead_lettered" if out.deadletter else "published")

    def _spawn(self, client: Any, out: _Outgoing) -> asyncio.Task[None]:
        # the task's first step hands the message to paho, so creation order is wire order
        task = asyncio.create_task(self._publish_one(client, out))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # seen: no log noise
        return task

    async def _publish_one(self, client: Any, out: _Outgoing) -> None:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.ContentType = "application/json"
        if out.correlation is not None:
            props.CorrelationData = out.correlation
        await client.publish(out.topic, out.payload, qos=self.config.qos, properties=props)


def _as_bytes(payload: Any) -> bytes:
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    if payload is None:
        return b""
    return str(payload).encode()
