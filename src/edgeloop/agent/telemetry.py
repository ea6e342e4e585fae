"""The agent's telemetry glue: what goes into the outbox (docs/telemetry.md) and when.

- **Events**: every updater transition, put synchronously where the updater records it
  (:class:`EventedUpdater`), so an event is durable in the outbox as soon as the record is.
- **Metrics**: every ``metrics_every_s`` a snapshot of the server's own counters over the window
  since the previous snapshot (the health recorder's per-request records): requests, errors and
  the nearest-rank p50/p99 latency in the app; ``None`` percentiles when no request ended in it;
  ``monitoring``: each served model's drift state (scores over thresholds, alarm counts, quality
  counts, windowed and estimated accuracy), as ``/agent/status`` shows it.
- **Samples**: inputs and outputs of served inference requests at ``sample_rate`` (0 disables),
  chosen deterministically (the n-th request is sampled when ``floor(n * rate)`` steps up: exactly
  one in 100 at 0.01), buffered and put with one ``put_many`` per flush (about once a second).
  A sample is acknowledged to nobody until that ``put_many`` returned.
- **Captures**: rows a served version's capture policy kept (:mod:`edgeloop.serving.capture`)
  and labels later posted for them, buffered and put as ``capture`` items with the samples'
  flush; at most ``_MAX_CAPTURES`` wait for a flush, more are counted in ``captures_dropped``.
- **Monitor alarms**: each ``drift`` / ``quality`` / ``degradation`` alarm of a served
  version's drift monitor (:mod:`edgeloop.serving.watch`) becomes an ``event`` item with a
  ``type`` key, queued on the event loop and put with the next flush (about once a second;
  at most ``_MAX_EVENTS`` wait, more are counted in ``monitor_events_dropped``).
- **Shipping**: the :class:`~edgeloop.agent.shipper.Shipper` runs once the node is enrolled.

The node serves whether or not any of this can reach the control plane.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edgeloop.agent.health import HealthRecorder, nearest_rank
from edgeloop.agent.home import AgentHome
from edgeloop.agent.identity import Identity
from edgeloop.agent.outbox import FILENAME, ItemKind, Outbox
from edgeloop.agent.outbox_backlog import Backlog
from edgeloop.agent.shipper import Shipper, ShipperConfig
from edgeloop.agent.update_state import UpdateState
from edgeloop.agent.updater import Updater
from edgeloop.core.errors import ConfigError, EdgeError
from edgeloop.serving.capture_record import Kept
from edgeloop.serving.watch import MonitorEvent

log = logging.getLogger(__name__)
_MAX_SAMPLE_BYTES = 256 << 10  # a request or answer larger than this is sampled as its size only
_FLUSH_S = 1.0
_MAX_EVENTS = 1000  # monitor alarms waiting for the next flush (alarms are rare: re-armed)
_MAX_CAPTURES = 10_000  # captured rows waiting for the next flush (bounded: ~1 s of traffic)


def check_settings(outbox_mb: float, metrics_every_s: float, sample_rate: float) -> None:
    """Raises ConfigError naming the bad option."""
    if not outbox_mb > 0:
        raise ConfigError(f"--outbox-mb {outbox_mb} must be > 0", hint="e.g. --outbox-mb 64")
    if not metrics_every_s > 0:
        raise ConfigError(
            f"--metrics-every-s {metrics_every_s} must be > 0", hint="e.g. --metrics-every-s 60"
        )
    if not 0.0 <= sample_rate <= 1.0:
        raise ConfigError(
            f"--sample-rate {sample_rate} must be within [0, 1]",
            hint="0.01 samples one request in 100; 0 disables sampling",
        )


class Telemetry:
    """Counts what this process put into the outbox; buffers samples; snapshots; ships."""

    def __init__(
        self, outbox: Outbox, *, metrics_every_s: float, sample_rate: float, source: str
    ) -> None:
        self.outbox = outbox
        self.metrics_every_s = metrics_every_s
        self.sample_rate = sample_rate
        self.source = source
        self.puts: dict[str, int] = {}  # records put (committed) by this process, by kind
        self.put_errors = 0
        self.seen = 0  # inference requests the sampler saw
        self.buffer: list[dict[str, Any]] = []
        self.shipper: Shipper | None = None
        self.model: Callable[[], tuple[str | None, str | None]] = lambda: (None, None)
        self.monitoring: Callable[[], dict[str, Any]] = dict  # served models' drift state
        self.monitor_events: list[dict[str, Any]] = []
        self.monitor_events_dropped = 0
        self.captures: list[Kept] = []
        self.captures_dropped = 0
        self.backlog: Backlog | None = None  # read at each flush: the report's ``outbox``

    # -- putting ---------------------------------------------------------------------------

    def put_now(self, kind: ItemKind, payloads: list[Any]) -> None:
        """Put synchronously (one transaction); a failing outbox is logged, never raised."""
        if not payloads:
            return
        try:
            self.outbox.put_many([(kind, p) for p in payloads])
        except EdgeError as exc:
            self.put_errors += len(payloads)
            log.warning("telemetry outbox: %s", exc.message)
            return
        self.puts[kind.value] = self.puts.get(kind.value, 0) + len(payloads)

    def should_sample(self) -> bool:
        self.seen += 1
        n, rate = self.seen, self.sample_rate
        return rate > 0 and math.floor(n * rate) > math.floor((n - 1) * rate)

    def monitor_event(self, event: MonitorEvent) -> None:
        """Queue a monitor alarm (a catalog's sink; runs on the event loop, never blocks)."""
        if len(self.monitor_events) >= _MAX_EVENTS:
            self.monitor_events_dropped += 1
            return
        self.monitor_events.append({**event.to_dict(), "source": self.source})

    def capture(self, kept: Kept) -> None:
        """Queue a captured row or its label (a capturer's sink; on the loop, never blocks:
        the row is encoded at the flush, in a worker thread)."""
        if len(self.captures) >= _MAX_CAPTURES:
            self.captures_dropped += 1
            return
        self.captures.append(kept)

    def put_captures(self, kept: list[Kept]) -> None:
        """Encode captured rows and put them (in a worker thread)."""
        self.put_now(ItemKind.CAPTURE, [{**k.record(), "source": self.source} for k in kept])

    async def flush(self) -> None:
        samples, self.buffer = self.buffer, []
        await asyncio.to_thread(self.put_now, ItemKind.SAMPLE, samples)
        if self.captures:
            captures, self.captures = self.captures, []
            await asyncio.to_thread(self.put_captures, captures)
        if self.monitor_events:
            events, self.monitor_events = self.monitor_events, []
            await asyncio.to_thread(self.put_now, ItemKind.EVENT, events)
        await asyncio.to_thread(self.read_backlog)

    def read_backlog(self) -> None:
        """Read what waits in the outbox (kept for the next report; a failure keeps the last)."""
        try:
            self.backlog = self.outbox.backlog()
        except EdgeError as exc:
            log.warning("telemetry outbox backlog: %s", exc.message)

    def backlog_report(self) -> dict[str, Any] | None:
        """The report's ``outbox`` (docs/fleet-protocol.md); None before the first read."""
        return None if self.backlog is None else self.backlog.to_report(time.time())

    def snapshot(self, recorder: HealthRecorder, since: float) -> dict[str, Any]:
        """The metrics of requests that ended at or after ``since`` (``time.monotonic()``)."""
        now = time.monotonic()
        window = [r for r in recorder.records if since <= r[0] < now]
        seconds = [r[2] for r in window]
        model, version = self.model()
        return {
            "window_s": round(now - since, 3),
            "model": model,
            "model_version": version,
            "requests": len(window),
            "errors": sum(1 for r in window if r[1] >= 500),
            "p50_ms": nearest_rank(seconds, 0.5) * 1000 if window else None,
            "p99_ms": nearest_rank(seconds, 0.99) * 1000 if window else None,
            "sampled_seen": self.seen,
            "monitoring": self.monitoring(),
        }

    async def run_metrics(self, recorder: HealthRecorder) -> None:
        """Flush samples every second and put a metrics snapshot every ``metrics_every_s``."""
        since = time.monotonic()
        try:
            while True:
                await asyncio.sleep(min(_FLUSH_S, self.metrics_every_s))
                await self.flush()
                if time.monotonic() - since >= self.metrics_every_s:
                    doc = self.snapshot(recorder, since)
                    since += doc["window_s"]
                    await asyncio.to_thread(self.put_now, ItemKind.METRICS, [doc])
        finally:
            await asyncio.shield(self.flush())

    async def run_shipper(self, identity: Callable[[], Identity | None]) -> None:
        """Wait for the node's identity (enrollment), then ship until cancelled."""
        while (found := identity()) is None:
            await asyncio.sleep(0.2)
        self.shipper = Shipper(
            self.outbox, ShipperConfig(found.control, found.node_id, found.node_token)
        )
        await self.shipper.run(asyncio.Event())

    async def status(self) -> dict[str, Any]:
        """Outbox stats, this process's puts and the shipper's counts (for ``/agent/status``)."""
        stats = await asyncio.to_thread(self.outbox.stats)
        doc = asdict(stats)
        doc["total_items"] = stats.total_items
        return {
            "outbox": doc,
            "puts": dict(self.puts),
            "put_errors": self.put_errors,
            "buffered_samples": len(self.buffer),
            "buffered_monitor_events": len(self.monitor_events),
            "monitor_events_dropped": self.monitor_events_dropped,
            "buffered_captures": len(self.captures),
            "captures_dropped": self.captures_dropped,
            "inference_seen": self.seen,
            "sample_rate": self.sample_rate,
            "metrics_every_s": self.metrics_every_s,
            "shipper": asdict(self.shipper.stats) if self.shipper else None,
        }


class EventedUpdater(Updater):
    """The updater, with each transition also put into the outbox as an ``event`` item."""

    telemetry: Telemetry | None = None

    def _move(self, new: UpdateState, detail: str, **changes: object) -> None:
        super()._move(new, detail, **changes)
        if self.telemetry is not None and self.record.events:
            event: dict[str, Any] = dict(self.record.events[-1].to_dict())
            record = self.record
            event["revision"] = record.target_revision or record.revision
            self.telemetry.put_now(ItemKind.EVENT, [event])


def _is_inference(scope: Scope) -> bool:
    path = str(scope.get("path", ""))
    return scope.get("method") == "POST" and (
        (path.startswith("/predict") and not path.endswith("/labels"))
        or (path.startswith("/v2/models/") and path.endswith("/infer"))
    )


def _decode(body: bytes, content_type: str) -> Any:
    if len(body) > _MAX_SAMPLE_BYTES:
        return {"bytes": len(body), "omitted": "larger than the sample limit"}
    if "json" in content_type:
        with contextlib.suppress(orjson.JSONDecodeError):
            return orjson.loads(body)
    return {"base64": base64.b64encode(body).decode(), "content_type": content_type}


class Sampler:
    """ASGI middleware: copies the request and answer of sampled inference requests to telemetry."""

    def __init__(self, app: ASGIApp, telemetry: Telemetry) -> None:
        self.app = app
        self.telemetry = telemetry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _is_inference(scope):
            await self.app(scope, receive, send)
            return
        if not self.telemetry.should_sample():
            await self.app(scope, receive, send)
            return
        request: list[bytes] = []
        answer: list[bytes] = []
        status = 500
        headers: dict[bytes, bytes] = {}

        async def receiving() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                request.append(message.get("body", b""))
            return message

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers.update((k.lower(), v) for k, v in message.get("headers", []))
            elif message["type"] == "http.response.body":
                answer.append(message.get("body", b""))
            await send(message)

        await self.app(scope, receiving, sending)
        request_type = dict(scope.get("headers", [])).get(b"content-type", b"").decode()
        outputs = _decode(b"".join(answer), headers.get(b"content-type", b"").decode())
        version = outputs.get("model_version") if isinstance(outputs, dict) else None
        self.telemetry.buffer.append(
            {
                "model": _model(scope, outputs),
                "model_version": version,
                "path": scope.get("path"),
                "status": status,
                "inputs": _decode(b"".join(request), request_type),
                "outputs": outputs,
                "source": self.telemetry.source,
                "at": time.time(),
            }
        )


def _model(scope: Scope, outputs: Any) -> str | None:
    if isinstance(outputs, dict) and isinstance(outputs.get("model_name"), str):
        return str(outputs["model_name"])
    parts = str(scope.get("path", "")).split("/")
    return parts[3] if len(parts) > 3 and parts[1] == "v2" else None


def outbox_path(home: AgentHome) -> Path:
    """``HOME/agent/outbox.sqlite``."""
    return home.root / FILENAME


@dataclass(frozen=True, slots=True)
class TelemetrySettings:
    """``edgeloop agent``'s telemetry options; validated on construction."""

    outbox_mb: float = 64.0
    metrics_every_s: float = 60.0
    sample_rate: float = 0.01

    def __post_init__(self) -> None:
        check_settings(self.outbox_mb, self.metrics_every_s, self.sample_rate)

    def open(self, home: AgentHome, source: str) -> Telemetry:
        """Open the outbox under ``home`` with the cap.

        Raises:
            StoreError: the outbox file cannot be opened.
        """
        outbox = Outbox.open(outbox_path(home), max_bytes=int(self.outbox_mb * (1 << 20)))
        return Telemetry(
            outbox,
            metrics_every_s=self.metrics_every_s,
            sample_rate=self.sample_rate,
            source=source,
        )
