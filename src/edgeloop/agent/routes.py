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
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

from edgeloop.agent.route_broker import BrokerConfig, new_client, publish
from edgeloop.agent.route_message import SOURCE_ID, Infer, Outgoing, as_bytes, handle
from edgeloop.agent.route_spec import RouteSpec
from edgeloop.core.errors import ConfigError, DataError, EdgeError, require

# Re-exported: the agent and the tests import these from here (route_broker.py and
# route_message.py hold them).
__all__ = ["SOURCE_ID", "BrokerConfig", "Infer", "Labels", "RouteCounters", "RouteRunner"]

Labels = Callable[[bytes], dict[str, Any]]
"""``labels(body) -> {"applied": n, "unknown": n, ...}``; raises ``EdgeError`` when refused."""


@dataclass
class RouteCounters:
    """Per route: messages received, results published, messages dead-lettered, and errors
    (inference that failed with something other than an ``EdgeError``: a runtime fault, still
    dead-lettered)."""

    received: int = 0
    published: int = 0
    dead_lettered: int = 0
    errors: int = 0


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
        self._queues: dict[str, asyncio.Queue[asyncio.Task[Outgoing]]] = {
            r.name: asyncio.Queue(maxsize=self.config.max_in_flight) for r in self.routes
        }
        # a result taken from its queue but not yet handed to paho (survives a reconnect)
        self._held: dict[str, asyncio.Task[Outgoing]] = {}
        # results handed to paho, oldest first, until their PUBACK (survives a reconnect)
        self._sent: dict[str, deque[tuple[Outgoing, asyncio.Task[None]]]] = {
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
        client = new_client(self._mqtt, self.config, self.client_id)
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
            self._label(as_bytes(message.payload))
            return
        matched = [r for r in self.routes if r.matches(topic)]
        if not matched:
            self.unrouted += 1  # a filter left over in a persistent session
            return
        payload = as_bytes(message.payload)
        props = message.properties
        content_type = getattr(props, "ContentType", None)
        user = dict(getattr(props, "UserProperty", None) or [])
        correlation = getattr(props, "CorrelationData", None)
        for route in matched:
            self._count(route.name, "received")
            seq = self.counters[route.name].received
            work = handle(
                route,
                topic,
                payload,
                (content_type, user, correlation),
                arrived,
                seq,
                infer=self.infer,
                max_payload_bytes=self.config.max_payload_bytes,
                deadletter_topic=self.config.deadletter_topic,
                observe=partial(self._observe, route.name),  # bound now: not the loop's last
                fault=partial(self._count, route.name, "errors"),
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

    def _observe(self, route: str, latency_s: float) -> None:
        self._latency.labels(route).observe(latency_s)

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

    def _spawn(self, client: Any, out: Outgoing) -> asyncio.Task[None]:
        # the task's first step hands the message to paho, so creation order is wire order
        task = asyncio.create_task(publish(client, out, self.config.qos))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # seen: no log noise
        return task
