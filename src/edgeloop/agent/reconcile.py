"""The reconcile loop: poll the desired state, act on a new revision, report what is.

Each pass: enroll if the node has no identity yet; ``GET /nodes/{id}/desired`` with the last
ETag (304: nothing new); on a revision newer than the one acted on, refresh TUF, fetch the
deployment document through the Updater and start the updater on it (in its own task, so passes
and reports go on during a long WATCH); then ``POST /nodes/{id}/report``. Passes are spaced by the
poll interval with +-20 % jitter (a fleet restarted together does not poll in lock-step), and
by an exponential back-off (up to 60 s) while the control plane cannot be reached. Serving never
waits for any of this.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeloop.agent.capabilities import probe, resources
from edgeloop.agent.control_client import ControlClient, Desired
from edgeloop.agent.deployment import parse_deployment
from edgeloop.agent.fetcher import FetchSources, HttpxFetcher
from edgeloop.agent.health import HealthRecorder
from edgeloop.agent.home import AgentHome
from edgeloop.agent.identity import Identity, enroll, load_identity
from edgeloop.agent.slots import SlotModel
from edgeloop.agent.tuf_client import TufSession
from edgeloop.agent.updater import Updater
from edgeloop.core.errors import ConfigError, EdgeError, TransportError

log = logging.getLogger(__name__)
MAX_BACKOFF_S = 60.0
REPORT_WINDOW_S = 30.0  # the health figures a report carries: the last half minute
_JITTER = 0.2


@dataclass(frozen=True, slots=True)
class AgentOptions:
    control: str
    enroll_token: str | None
    name: str
    tuf_root: Path | None
    poll_s: float = 5.0
    download_deadline_s: float = 300.0

    def __post_init__(self) -> None:
        if not self.poll_s > 0:
            raise ConfigError(f"--poll-s {self.poll_s} must be > 0")
        if not self.control.startswith(("http://", "https://")):
            raise ConfigError(
                f"--control {self.control!r} is not an http(s) URL",
                hint="e.g. --control http://127.0.0.1:8700",
            )


def next_delay(poll_s: float, failures: int, draw: float) -> float:
    """Seconds to the next pass: the interval (doubled per failure, capped) times 1 +- 20 %.

    ``draw`` is a uniform number in [0, 1) (the jitter's source).
    """
    base = min(poll_s * 2.0**failures, max(MAX_BACKOFF_S, poll_s)) if failures else poll_s
    return base * (1.0 - _JITTER + 2.0 * _JITTER * draw)


class Reconciler:
    """One node's loop; ``agent_url`` is where this node's server listens."""

    def __init__(
        self,
        home: AgentHome,
        updater: Updater,
        options: AgentOptions,
        health: HealthRecorder | None,
        agent_url: str,
    ) -> None:
        self.home = home
        self.updater = updater
        self.options = options
        self.health = health
        self.agent_url = agent_url
        self.identity: Identity | None = load_identity(home)
        self.client: ControlClient | None = None
        self.etag: str | None = None
        self.desired: Desired | None = None
        self.failures = 0
        self.last_error: str | None = None
        self.update_task: asyncio.Task[Any] | None = None
        self.reports = 0
        self.parent: str | None = None  # --parent: artifacts from its tier cache first
        self.sources = FetchSources()  # where artifacts came from, over this process's life
        self.beat = time.monotonic()  # last sign of progress (the systemd watchdog reads it)
        self.waiting = False  # between passes: progress while the event loop runs (the watchdog)
        # What the server really serves of a slot's model (``serving``, ``serving_state``);
        # None: no server here (tools, tests), the report carries the slot alone.
        self.serving: Callable[[SlotModel], dict[str, Any]] | None = None
        # Serves a slot's model again if the server lost it; True when it had to (None: no
        # server here). What the slot pointer names is what this node serves.
        self.repair: Callable[[SlotModel], Awaitable[bool]] | None = None
        self.repairs = 0
        # What waits in the telemetry outbox (the report's ``outbox``); None: no outbox here.
        self.backlog: Callable[[], dict[str, Any] | None] | None = None

    async def run_forever(self) -> None:
        rng = random.Random()
        while True:
            self.beat = time.monotonic()
            try:
                await self.tick()
                self.failures = 0
            except EdgeError as exc:
                self.failures += 1 if isinstance(exc, TransportError) else 0
                self.last_error = exc.message
                log.warning("reconcile: %s", exc.message)
            except Exception as exc:  # a malformed answer, a bug: keep serving, keep trying
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("reconcile pass failed")
            await self._wait(next_delay(self.options.poll_s, self.failures, rng.random()))

    async def _wait(self, seconds: float) -> None:
        """Sleep ``seconds`` in steps of at most one, beating at each (waiting is progress).

        ``waiting`` is set meanwhile: a beat a second old is as old as a 1 s ``WATCHDOG_USEC``
        allows, so the watchdog goes by the flag while the loop waits, not by the beat's age.
        """
        end = time.monotonic() + seconds
        self.waiting = True
        try:
            while (left := end - time.monotonic()) > 0:
                await asyncio.sleep(min(left, 1.0))
                self.beat = time.monotonic()
        finally:
            self.waiting = False
            self.beat = time.monotonic()

    def _client(self) -> tuple[ControlClient, Identity]:
        assert self.identity is not None  # enrolled before any call needs it
        if self.client is None:
            self.client = ControlClient(self.identity.control, self.identity.node_token)
        return self.client, self.identity

    async def tick(self) -> None:
        """One pass (raises what failed; the loop counts it and backs off)."""
        await self._repair()  # first: serving never waits for the control plane
        if self.identity is None:
            await self._enroll()
        client, identity = self._client()
        desired = await asyncio.to_thread(client.desired, identity.node_id, self.etag)
        if desired is not None:
            self.desired, self.etag = desired, desired.etag
        try:
            await self._act()
            self.last_error = None
        except EdgeError as exc:
            self.last_error = exc.message
            raise
        finally:
            await self.report()

    async def _enroll(self) -> None:
        if not self.options.enroll_token:
            raise ConfigError(
                "this node is not enrolled and no --enroll-token was given",
                hint="create one with POST /api/v1/enrollment-tokens (admin) and pass it",
            )
        body = {
            "enrollment_token": self.options.enroll_token,
            "name": self.options.name,
            "capabilities": await asyncio.to_thread(probe),
            "agent_url": self.agent_url,
        }
        anonymous = ControlClient(self.options.control)
        try:
            self.identity = await asyncio.to_thread(
                enroll, self.home, anonymous, body, self.options.tuf_root
            )
        finally:
            anonymous.close()
        log.info("enrolled as node %s", self.identity.node_id)

    async def _repair(self) -> None:
        """Serve the active slot's model again if the server lost it (a failed load, a bug):
        never while an update runs (the updater then decides what serves)."""
        if self.repair is None or self.updating:
            return
        active = self.updater.slots.read(self.updater.slots.active_name())
        if active is None:
            return
        try:
            repaired = await self.repair(active)
        except EdgeError as exc:
            self.last_error = f"serving the active model again failed: {exc.message}"
            log.warning("reconcile: %s", self.last_error)
            return
        if repaired:
            self.repairs += 1
            log.warning("the server had lost %s version %d; serving it again",
                        active.name, active.version)  # fmt: skip

    @property
    def updating(self) -> bool:
        return self.update_task is not None and not self.update_task.done()

    async def _act(self) -> None:
        desired = self.desired
        if desired is None or self.updating or not self.updater.wants(desired.revision):
            return
        _, identity = self._client()
        fetcher = HttpxFetcher(
            identity.node_token,
            self.home.downloads,
            identity.targets_url,
            deadline_s=self.options.download_deadline_s,
            parent=self.parent,
            node_id=identity.node_id,
            sources=self.sources,
        )
        try:
            session = await asyncio.to_thread(
                TufSession, self.home, identity.metadata_url, identity.targets_url, fetcher
            )
            document = await asyncio.to_thread(session.document, desired.target)
            deployment = parse_deployment(document, identity.node_id)
        except BaseException:
            fetcher.close()
            raise
        if not self.updater.wants(deployment.revision):
            fetcher.close()
            log.info("signed deployment is revision %d, desired %d: waiting for the repository",
                     deployment.revision, desired.revision)  # fmt: skip
            return

        async def update() -> None:
            try:
                await self.updater.run(deployment, document, session)
            finally:
                fetcher.close()
                await self.report()

        self.update_task = asyncio.get_running_loop().create_task(update())

    def report_body(self) -> dict[str, Any]:
        """The report of the contract, from the record, the slots and the server's figures."""
        record = self.updater.record
        slots = self.updater.slots
        active_name = slots.active_name()
        active = slots.read(active_name)
        previous = slots.read(slots.other(active_name)) if active_name else None
        figures = None
        if self.health is not None:
            import time

            figures = self.health.figures(time.monotonic() - REPORT_WINDOW_S).to_dict()
        test = self.updater.self_test
        return {
            "revision": record.revision,
            "updater": {
                "state": record.state.value,
                "target_revision": record.target_revision,
                "error": record.error or self.last_error,
                "outcome": record.outcome.value if record.outcome else None,
                "failed_revision": record.failed_revision,
            },
            "active": self._active(active),
            "previous": previous.to_dict() if previous else None,
            "self_test": test.to_dict() if test else None,
            "health": figures,
            "events": [e.to_dict() for e in record.events],
            "resources": resources(),  # memory available now, measured here
            "outbox": self.backlog() if self.backlog is not None else None,
        }

    def _active(self, active: SlotModel | None) -> dict[str, Any] | None:
        """The active slot's model, and whether the server really answers with it."""
        if active is None:
            return None
        doc = active.to_dict(self.updater.active_since)
        if self.serving is not None:
            doc.update(self.serving(active))
        return doc

    async def report(self) -> None:
        if self.identity is None:
            return
        client, identity = self._client()
        body = self.report_body()
        events = self.updater.record.events
        await asyncio.to_thread(client.report, identity.node_id, body)
        self.updater.acknowledge(tuple(events))
        self.reports += 1
