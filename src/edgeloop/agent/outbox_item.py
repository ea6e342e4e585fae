"""One telemetry outbox item: its kind, its time-ordered id (UUIDv7), its wire form, and how a
payload is checked and encoded before :class:`edgeloop.agent.outbox.Outbox` stores it."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from edgeloop.core.errors import ConfigError, DataError


class ItemKind(StrEnum):
    """What an outbox item holds; the value is also its drop priority's name."""

    SAMPLE = "sample"  # sampled inputs/outputs: dropped first
    CAPTURE = "capture"  # rows a capture policy kept (serving/capture.py): dropped next
    METRICS = "metrics"  # metrics snapshots: dropped next
    EVENT = "event"  # updater events: dropped only when nothing else is left
    DROPPED = "dropped"  # drop report: never dropped


JSON = "application/json"
BINARY = "application/octet-stream"


_id_lock = threading.Lock()
_last_id = 0


def new_id() -> str:
    """A UUIDv7 (RFC 9562): Unix ms, 12 bits of sub-ms time, 62 random bits; sorts by time.

    Ids made in one process also sort in the order they were made (RFC 9562 section 6.2,
    method 3: sub-millisecond precision, then a bump when the clock did not move).
    """
    global _last_id
    ns = time.time_ns()
    ms, sub_ms = divmod(ns, 1_000_000)
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version 7
    value |= (sub_ms * 4096 // 1_000_000) << 64  # rand_a holds the sub-millisecond fraction
    value |= 0b10 << 62  # variant
    value |= int.from_bytes(os.urandom(8), "big") >> 2  # rand_b, 62 bits
    with _id_lock:
        if value <= _last_id:
            value = _last_id + 1
        _last_id = value
    return str(uuid.UUID(int=value))


def iso(ts: float) -> str:
    """Unix seconds as RFC 3339 UTC with microseconds."""
    moment = datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds")
    return moment.replace("+00:00", "Z")  # fixed width: these strings sort like the times


@dataclass(frozen=True, slots=True)
class Item:
    """One queued record as :meth:`Outbox.batch` hands it out."""

    id: str
    seq: int
    kind: ItemKind
    created_at: float
    content_type: str
    payload: bytes

    def to_wire(self) -> dict[str, Any]:
        """The item as the telemetry endpoint takes it (docs/fleet-protocol.md, Telemetry)."""
        import base64

        body: Any
        if self.content_type == JSON:
            body = json.loads(self.payload)
        else:
            body = base64.b64encode(self.payload).decode("ascii")
        return {
            "id": self.id,
            "kind": self.kind.value,
            "created_at": iso(self.created_at),
            "content_type": self.content_type,
            "payload": body,
        }


def parse_kind(kind: ItemKind | str) -> ItemKind:
    try:
        parsed = ItemKind(kind)
    except ValueError:
        parsed = ItemKind.DROPPED
    if parsed is ItemKind.DROPPED:
        raise ConfigError(
            f"unknown outbox item kind {kind!r}",
            hint="use one of 'sample', 'capture', 'metrics', 'event' "
            "(drop reports are made by the outbox)",
        )
    return parsed


def encode_payload(payload: Any) -> tuple[str, bytes]:
    if isinstance(payload, bytes | bytearray | memoryview):
        return BINARY, bytes(payload)
    try:
        return JSON, json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise DataError(
            f"an outbox payload must be bytes or JSON-serialisable: {exc}",
            hint="convert arrays with .tolist() and NaN/inf to null before put()",
        ) from exc
