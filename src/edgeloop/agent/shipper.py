"""Ships the outbox to the control plane: ``POST /api/v1/nodes/{id}/telemetry`` in batches.

Items are acked in the outbox only after a 2xx answer, so every item is delivered at least once;
the control plane de-duplicates by item id (docs/fleet-protocol.md, Telemetry). While the control
plane is unreachable or answers an error, the shipper releases the batch and waits with
exponential back-off and jitter (the "equal jitter" of AWS's back-off note: half the delay is
fixed, half random, so a fleet that lost its control plane at once does not come back at once).
The node keeps serving meanwhile: the outbox fills up to its cap and counts what it drops.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from edgeloop.agent.outbox import Item, Outbox
from edgeloop.core.errors import ConfigError, TransportError
from edgeloop.core.tls import client_verify


@dataclass(frozen=True, slots=True)
class ShipperConfig:
    """Where and how to ship; validated on construction."""

    control_url: str
    node_id: str
    node_token: str
    batch_items: int = 500
    batch_bytes: int = 1 << 20
    idle_s: float = 1.0  # wait when the outbox is empty
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 60.0
    timeout_s: float = 10.0
    lease_s: float = 60.0

    def __post_init__(self) -> None:
        if not self.control_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"control plane URL {self.control_url!r} is not http(s)",
                hint="give the URL the node enrolled with, e.g. http://127.0.0.1:8700",
            )
        numbers = {
            "batch_items": self.batch_items,
            "batch_bytes": self.batch_bytes,
            "idle_s": self.idle_s,
            "backoff_initial_s": self.backoff_initial_s,
            "backoff_max_s": self.backoff_max_s,
            "timeout_s": self.timeout_s,
            "lease_s": self.lease_s,
        }
        bad = {k: v for k, v in numbers.items() if v <= 0}
        if bad or self.backoff_max_s < self.backoff_initial_s:
            raise ConfigError(
                f"shipper settings must be positive with backoff_max_s >= backoff_initial_s, "
                f"got {bad or numbers}"
            )
        if self.lease_s <= self.timeout_s:
            raise ConfigError(
                f"lease_s ({self.lease_s}) must exceed timeout_s ({self.timeout_s}), or a slow "
                "answer would see its batch handed out again while it is still in flight"
            )

    @property
    def url(self) -> str:
        return f"{self.control_url.rstrip('/')}/api/v1/nodes/{self.node_id}/telemetry"


def backoff_delay(
    failures: int, initial_s: float, max_s: float, rng: random.Random | None = None
) -> float:
    """Delay after ``failures`` consecutive failures: ``d = min(max, initial * 2**(n-1))``,
    then a uniform draw in ``[d/2, d]`` (equal jitter)."""
    if failures <= 0:
        return 0.0
    ceiling = min(max_s, initial_s * 2.0 ** min(failures - 1, 62))
    return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)


@dataclass(frozen=True, slots=True)
class Shipped:
    """What one successful POST delivered."""

    sent: int
    accepted: int | None  # as the control plane counted them; None when it did not say
    duplicates: int | None
    rejected: int | None = None  # items it refused as malformed (retrying cannot fix them)


@dataclass
class ShipperStats:
    """Running counts of this shipper (process lifetime)."""

    batches: int = 0
    items_acked: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    last_error: str | None = None
    last_success_at: float | None = None
    next_retry_s: float = 0.0
    errors_by_status: dict[str, int] = field(default_factory=dict)


class Shipper:
    """Takes batches from an :class:`Outbox` and POSTs them until the outbox is empty."""

    def __init__(
        self,
        outbox: Outbox,
        config: ShipperConfig,
        *,
        client: httpx.AsyncClient | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.outbox = outbox
        self.config = config
        self.stats = ShipperStats()
        self._client = client
        self._owns_client = False
        self._rng = rng or random.Random()

    async def aclose(self) -> None:
        """Close the HTTP client this shipper made (one passed in is the caller's to close)."""
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client, self._owns_client = None, False

    async def ship_once(self) -> Shipped | None:
        """Deliver one batch; ``None`` when the outbox had nothing to send.

        Raises:
            TransportError: the control plane was unreachable or did not answer 2xx; the batch
                stays in the outbox (its lease is released) for the next try.
        """
        cfg = self.config
        items = await asyncio.to_thread(
            self.outbox.batch, cfg.batch_items, cfg.batch_bytes, cfg.lease_s
        )
        if not items:
            return None
        ids = [item.id for item in items]
        try:
            answer = await self._post(items)
        except TransportError:
            await asyncio.to_thread(self.outbox.release, ids)
            raise
        await asyncio.to_thread(self.outbox.ack, ids)
        return answer

    async def _post(self, items: list[Item]) -> Shipped:
        cfg = self.config
        body = {"items": [item.to_wire() for item in items]}
        headers = {"Authorization": f"Bearer {cfg.node_token}"}
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=cfg.timeout_s, verify=client_verify())
            self._owns_client = True
        try:
            response = await self._client.post(cfg.url, json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise TransportError(
                f"telemetry to {cfg.url} failed: {type(exc).__name__}: {exc}",
                hint="the items stay in the outbox; the shipper retries with back-off",
            ) from exc
        if not response.is_success:
            self.stats.errors_by_status[str(response.status_code)] = (
                self.stats.errors_by_status.get(str(response.status_code), 0) + 1
            )
            raise TransportError(
                f"telemetry to {cfg.url} answered {response.status_code}: {response.text[:200]}",
                hint="the items stay in the outbox; check the node token if this is 401/403",
            )
        return Shipped(len(items), *_counts(response))

    async def drain(self) -> int:
        """Ship until the outbox is empty; returns the items acked. Stops at the first failure.

        Raises:
            TransportError: as :meth:`ship_once`.
        """
        acked = 0
        while (shipped := await self.ship_once()) is not None:
            self._record_success(shipped)
            acked += shipped.sent
        return acked

    async def run(self, stop: asyncio.Event) -> None:
        """Ship forever (until ``stop`` is set): drain, wait ``idle_s``, and back off on failure.

        Never raises for a control plane that is down or answers errors: those are counted in
        :attr:`stats` and retried. Cancelling the task is safe: an unacked batch is re-sent.
        """
        try:
            while not stop.is_set():
                try:
                    await self.drain()
                    delay = self.config.idle_s
                except TransportError as exc:
                    delay = self._record_failure(exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay)
        finally:
            await self.aclose()

    def _record_success(self, shipped: Shipped) -> None:
        s = self.stats
        s.batches += 1
        s.items_acked += shipped.sent
        s.accepted += shipped.accepted or 0
        s.duplicates += shipped.duplicates or 0
        s.rejected += shipped.rejected or 0
        s.consecutive_failures = 0
        s.next_retry_s = 0.0
        s.last_success_at = time.time()

    def _record_failure(self, exc: TransportError) -> float:
        s = self.stats
        s.failures += 1
        s.consecutive_failures += 1
        s.last_error = exc.message
        cfg = self.config
        s.next_retry_s = backoff_delay(
            s.consecutive_failures, cfg.backoff_initial_s, cfg.backoff_max_s, self._rng
        )
        return s.next_retry_s


def _counts(response: httpx.Response) -> tuple[int | None, int | None, int | None]:
    """``accepted``, ``duplicates`` and how many ``rejected``; a 2xx without them still acks."""
    try:
        doc: Any = response.json()
    except ValueError:
        return None, None, None
    if not isinstance(doc, dict):
        return None, None, None
    accepted, duplicates, rejected = doc.get("accepted"), doc.get("duplicates"), doc.get("rejected")
    return (
        accepted if isinstance(accepted, int) else None,
        duplicates if isinstance(duplicates, int) else None,
        len(rejected) if isinstance(rejected, list) else None,
    )
