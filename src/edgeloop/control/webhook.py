"""Alert delivery to a webhook: a bounded queue and one sender task, off the control loop.

:meth:`Webhook.offer` never blocks: a full queue drops the notice and counts it. The sender POSTs
each notice as JSON (docs/fleet-monitoring.md#webhook), with a finite timeout per attempt, and
retries a failed attempt (a transport error or a status >= 300) ``attempts - 1`` times with
exponential backoff; a notice that fails every attempt is counted and logged, then dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from edgeloop.core.errors import ConfigError

log = logging.getLogger("edgeloop.control")


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    """Where and how alerts are sent."""

    url: str
    timeout_s: float = 5.0
    attempts: int = 5
    backoff_s: float = 0.5  # the first retry's wait; doubled each retry, at most max_backoff_s
    max_backoff_s: float = 30.0
    queue: int = 1000

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(
                f"--alert-webhook {self.url!r} is not an http(s) URL",
                hint="e.g. --alert-webhook https://hooks.example.com/edgeloop",
            )
        if not (0 < self.timeout_s <= 300 and 1 <= self.attempts <= 100 and self.queue >= 1):
            raise ConfigError(
                f"webhook timeout_s {self.timeout_s}, attempts {self.attempts}, queue "
                f"{self.queue}: expected 0 < timeout_s <= 300, 1 <= attempts <= 100, queue >= 1"
            )


class Webhook:
    """The queue and its sender (start :meth:`run` as a task on the serving loop)."""

    def __init__(self, config: WebhookConfig, transport: httpx.AsyncBaseTransport | None = None):
        self.config = config
        self.transport = transport
        self.queue: asyncio.Queue[Mapping[str, Any]] = asyncio.Queue(config.queue)
        self.counts = {"sent": 0, "retried": 0, "failed": 0, "dropped": 0}

    def offer(self, notice: Mapping[str, Any]) -> bool:
        """Queue ``notice`` (False, counted: the queue is full). Never blocks."""
        try:
            self.queue.put_nowait(notice)
        except asyncio.QueueFull:
            self.counts["dropped"] += 1
            log.warning("alert webhook queue full: a notice was dropped")
            return False
        return True

    async def run(self) -> None:
        """Send queued notices until cancelled."""
        timeout = httpx.Timeout(self.config.timeout_s)
        async with httpx.AsyncClient(timeout=timeout, transport=self.transport) as client:
            while True:
                notice = await self.queue.get()
                await self._deliver(client, notice)

    async def _deliver(self, client: httpx.AsyncClient, notice: Mapping[str, Any]) -> None:
        c = self.config
        for attempt in range(c.attempts):
            if attempt:
                self.counts["retried"] += 1
                await asyncio.sleep(min(c.max_backoff_s, c.backoff_s * 2 ** (attempt - 1)))
            try:
                answer = await client.post(c.url, json=dict(notice))
            except httpx.HTTPError as exc:
                why = f"{type(exc).__name__}: {exc}"
            else:
                if answer.status_code < 300:
                    self.counts["sent"] += 1
                    return
                why = f"HTTP {answer.status_code}"
            log.info("alert webhook attempt %d of %d failed: %s", attempt + 1, c.attempts, why)
        self.counts["failed"] += 1
        log.warning("alert webhook: gave up on a notice after %d attempts", c.attempts)
