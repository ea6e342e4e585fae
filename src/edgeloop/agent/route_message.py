"""One routed message's work: decode it, infer, and make the result for the route's THEN topic or
the dead letter that says why not (:mod:`edgeloop.agent.routes` runs it as one task per message)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from edgeloop.agent.route_payload import deadletter_document, decode, result_document
from edgeloop.agent.route_spec import RouteSpec
from edgeloop.core.errors import DataError, EdgeError

Infer = Callable[[str, np.ndarray], Awaitable[tuple[Any, Any]]]
"""``infer(model, features) -> (outputs, model_version)``; raises ``NotFoundError`` for a model it
does not serve and ``EdgeError`` (or anything) for features it cannot take."""
# The source id of the message being inferred (task-local: each message has its own task).
SOURCE_ID: ContextVar[str | None] = ContextVar("edgeloop_route_source_id", default=None)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A result or dead letter waiting to be published."""

    topic: str
    payload: bytes
    deadletter: bool
    correlation: bytes | None


async def handle(
    route: RouteSpec,
    topic: str,
    payload: bytes,
    props: tuple[str | None, dict[str, str], bytes | None],
    arrived: float,
    seq: int,
    *,
    infer: Infer,
    max_payload_bytes: int,
    deadletter_topic: str,
    observe: Callable[[float], None],
    fault: Callable[[], None],
) -> Outgoing:
    """The message's result, or its dead letter (never raises for a bad message).
    ``observe(latency_s)`` is called for a result; ``fault()`` when inference failed with
    something other than an ``EdgeError`` (a runtime fault)."""
    content_type, user, correlation = props
    source_id = user.get("id")
    try:
        if len(payload) > max_payload_bytes:
            raise DataError(
                f"payload of {len(payload)} bytes is over the route limit of "
                f"{max_payload_bytes} bytes",
                hint="publish smaller messages or raise BrokerConfig.max_payload_bytes",
            )
        decoded = decode(payload, content_type, user)
        source_id = decoded.source_id
        SOURCE_ID.set(source_id)  # this message's task only: the join's request id
        outputs, version = await infer(route.model, decoded.features)
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
        observe(latency_s)
        return Outgoing(target, body, False, correlation)
    except EdgeError as exc:
        reason, error = exc.message, type(exc).__name__
    except Exception as exc:  # the runtime failed on this message; the route goes on
        reason, error = f"{type(exc).__name__}: {exc}", type(exc).__name__
        fault()
    letter = deadletter_document(
        route=route.name,
        reason=reason,
        error=error,
        source_topic=topic,
        source_id=source_id,
        payload=payload[:max_payload_bytes],
        payload_bytes=len(payload),
        at=datetime.now(UTC).isoformat().replace("+00:00", "Z"),
    )
    return Outgoing(deadletter_topic, letter, True, correlation)


def as_bytes(payload: Any) -> bytes:
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    if payload is None:
        return b""
    return str(payload).encode()
