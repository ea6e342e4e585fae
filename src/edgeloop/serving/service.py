"""One inference request from model name to outputs: route, validate, admit, run, shadow.

The order is deliberate: a request is validated before it is admitted, so a malformed request
never takes a queue slot; it is admitted before it waits, so the wait is bounded. A request
that times out is cancelled and answered 504 at once: if it was still queued it never runs
(the batcher skips cancelled requests, the executor drops work not yet started), and if it was
already running, the engine finishes that run (at most ``workers`` runs) unobserved.

A model cascaded to a large tier (:mod:`edgeloop.serving.cascade`) has its unsure rows
answered after its own run: by a served model (a request of its own, counted under the endpoint
``cascade`` and bounded by that model's queue and timeout) or by a parent tier over HTTP
(bounded by ``cascade_timeout_s``). Its own run's timeout does not cover the escalation: when
the tier fails, the small answer is ready to return at once.

A :class:`Ticket` travels with the request and collects what is known about it (model,
version, variant, timing) so the HTTP edge can count it once, whatever the outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from edgeloop.core.errors import EdgeError
from edgeloop.serving.admission import Gate, QueueDelay
from edgeloop.serving.capture_files import CaptureFile
from edgeloop.serving.capture_sink import Capturer
from edgeloop.serving.cascade import CascadeOutcome, Escalator
from edgeloop.serving.catalog import Catalog, ServedModel
from edgeloop.serving.confidence_tally import tallied
from edgeloop.serving.errors import DeadlineError, QueueFullError
from edgeloop.serving.labels import MAX_LABEL_ROWS, JoinMap, Served
from edgeloop.serving.metrics import UNKNOWN, ServerMetrics, Timing
from edgeloop.serving.routing import Router
from edgeloop.serving.served import Result, ServedVersion

log = logging.getLogger(__name__)
Feeds = dict[str, np.ndarray[Any, Any]]
MakeFeeds = Callable[[ServedVersion], Feeds]


@dataclass(slots=True)
class Ticket:
    """What is known about one request so far; filled in as it moves through the service."""

    endpoint: str
    started: float = field(default_factory=time.perf_counter)
    model: str = UNKNOWN
    version: str = ""
    variant: str = ""
    timing: Timing | None = None

    @property
    def arm(self) -> tuple[str, str, str, str]:
        return (self.model, self.version, self.variant, "primary")


@dataclass(frozen=True, slots=True, eq=False)
class Answer:
    """A request's outputs, the version and variant that produced them, and who answered the
    rows a cascade escalated (None: the model is not cascaded)."""

    model: str
    version: str
    result: Result
    cascade: CascadeOutcome | None = None


class InferenceService:
    """Routes requests over the catalog; see the module docstring."""

    def __init__(self, catalog: Catalog, metrics: ServerMetrics) -> None:
        self.catalog = catalog
        self.metrics = metrics
        self.timeout_s = catalog.config.timeout_s
        self.router = Router(catalog.config.seed)
        self.escalator = Escalator(
            catalog.config.cascades, metrics, catalog.config.cascade_timeout_s
        )
        self._background: set[asyncio.Task[Any]] = set()
        self.delay = QueueDelay(catalog.config.max_queue_delay_ms / 1000.0)  # + front door
        self.joins = JoinMap(catalog.config.label_capacity, catalog.config.label_ttl_s)
        self.capture = Capturer()  # serving/capture_sink.py: versions with a capture policy
        catalog.monitor_sinks.append(self.capture.monitor_event)  # drift alarms open windows
        out = catalog.config.capture_out
        self.capture_file = CaptureFile(out) if out is not None else None
        if self.capture_file is not None:
            self.capture.sinks.append(self.capture_file)

    def precheck(self, ticket: Ticket, name: str) -> None:
        """Refuse early, before the body is read: unknown model (404) or full queue (429).

        Raises:
            NotFoundError, QueueFullError.
        """
        model = self.catalog.model(name)
        ticket.model = model.name
        _gate(model, self.delay).check()

    async def infer(
        self,
        ticket: Ticket,
        name: str,
        version: str | None,
        key: str | None,
        make_feeds: MakeFeeds,
        request_id: str | None = None,
    ) -> Answer:
        """Answer one request for model ``name`` (``version`` None: routed).

        A watched version's monitor gets the request after its answer (``_watch``); with a
        ``request_id`` the answer waits in the join map for its label (serving/labels.py).

        Raises:
            NotFoundError: unknown model or version.
            NotReadyError: the model or version is not ready (503).
            DataError, BadRequestError: ``make_feeds`` refused the request.
            QueueFullError: the model's queue is full (429).
            DeadlineError: no answer within the timeout (504).
            What the runtime raises (DataError for an input the engine refused, ...).
        """
        model = self.catalog.model(name)
        ticket.model = model.name
        primary, shadow = model.resolve(version, key, self.router)
        ticket.version = primary.version
        feeds = make_feeds(primary)
        # The last look before the queue: a request that waited past the budget since it
        # arrived (behind other requests on the event loop, reading its body) is refused now.
        now = time.perf_counter()
        self.delay.check(model.name, now - ticket.started, now)
        _gate(model, self.delay).enter()
        try:
            if primary.runs_inline(feeds):  # runs to its end on the loop: no timer can cut in
                result = await self._run(model, primary, feeds)
            else:
                async with asyncio.timeout(self.timeout_s):
                    result = await self._run(model, primary, feeds)
        except TimeoutError:
            raise DeadlineError(
                f"{primary.where} did not answer within the {self.timeout_s:g} s timeout",
                hint="retry later, send smaller batches, or start the server with more --timeout",
            ) from None
        if shadow is not None:
            self._shadow(model, shadow, feeds, result, ticket.endpoint)
        outcome = None
        if model.name in self.escalator.specs:
            outputs, outcome = await self.escalator.apply(
                model.name, result.outputs, feeds, self._run_large
            )
            result = replace(result, outputs=outputs)
        ticket.variant = result.variant
        ticket.timing = _timing(ticket, result)
        self._tally(model, primary.version, "primary", result.outputs)
        if primary.watch.active:
            self._watch(model.name, primary, feeds, result.outputs, request_id)
        if primary.config.capture is not None:
            self._capture(model.name, primary, feeds, result.outputs, request_id)
        return Answer(model.name, primary.version, result, outcome)

    def _watch(
        self, name: str, version: ServedVersion, feeds: Feeds, outputs: Feeds, rid: str | None
    ) -> None:
        """Hand the answered request to the version's monitor; remember it for its label."""
        x = next(iter(feeds.values()), None)
        y = next(iter(outputs.values()), None)
        try:
            version.watch.observe(x, y)
            joinable = y is not None and y.ndim and y.shape[0] <= MAX_LABEL_ROWS
            if rid is not None and version.watch.classes is not None and y is not None and joinable:
                predicted = y.reshape(y.shape[0], -1).argmax(axis=1)
                served = Served(version.version, tuple(int(v) for v in predicted), time.monotonic())
                self.joins.record(name, rid, served)
        except Exception:  # monitoring never fails an answered request
            log.exception("%s: monitoring the request failed", version.where)

    def _tally(self, model: ServedModel, version: str, role: str, outputs: Feeds) -> None:
        """The answer's top-1 confidence into the version's sums (serving/confidence_tally.py),
        only while the model serves more than one version (a split or a shadow): the only
        time an experiment reads it; a model served alone skips the tally's cost."""
        if not tallied(model.routing):
            return
        first = next(iter(outputs.values()), None)
        try:
            self.metrics.confidence.observe(model.name, version, role, first)
        except Exception:  # counting never fails an answered request
            log.exception("%s:%s: counting the answer's confidence failed", model.name, version)

    def _capture(
        self, name: str, version: ServedVersion, feeds: Feeds, outputs: Feeds, rid: str | None
    ) -> None:
        """Hand the answered request to the capture policy (serving/capture_sink.py)."""
        spec = version.config.capture
        try:
            if spec is not None:
                self.capture.observe(spec, name, version.version, rid, feeds, outputs)
        except Exception:  # capturing never fails an answered request
            log.exception("%s: capturing the request failed", version.where)

    async def _run_large(self, name: str, feeds: Feeds) -> Feeds:
        """A cascade's escalated rows, answered by served model ``name`` (counted on its own).

        Raises:
            What :meth:`infer` raises for ``name``.
        """
        ticket = Ticket("cascade")
        code = 200
        try:
            answer = await self.infer(ticket, name, None, None, lambda served: feeds)
            return answer.result.outputs
        except EdgeError as exc:
            code = exc.http_status
            self.metrics.failed(ticket.model, ticket.version, type(exc).__name__)
            raise
        finally:
            self.metrics.observe(ticket.arm, ticket.endpoint, code, ticket.timing)

    async def _run(self, model: ServedModel, version: ServedVersion, feeds: Feeds) -> Result:
        started = time.perf_counter()
        work_s = math.nan
        try:
            with version.hold():
                result = await version.infer(feeds)
            # A batch's engine time is shared by its requests (batch_size counts its rows;
            # a request of several rows gets its rows' share).
            rows = _rows(feeds)
            work_s = result.inference_ms / 1000.0 * rows / max(rows, result.batch_size)
            return result
        finally:
            model.gate.leave(time.perf_counter() - started, work_s)

    def _shadow(
        self,
        model: ServedModel,
        shadow: ServedVersion,
        feeds: Feeds,
        primary: Result,
        endpoint: str,
    ) -> None:
        """Send a copy to the shadow version in the background; nobody waits for its answer."""
        try:
            model.shadow_gate.enter()
        except QueueFullError:
            self.metrics.shadow.labels(model.name, shadow.version, "dropped").inc()
            return
        task = asyncio.ensure_future(self._run_shadow(model, shadow, feeds, primary, endpoint))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _run_shadow(
        self,
        model: ServedModel,
        shadow: ServedVersion,
        feeds: Feeds,
        primary: Result,
        endpoint: str,
    ) -> None:
        ticket = Ticket(endpoint, model=model.name, version=shadow.version)
        code = 200
        try:
            with shadow.hold():
                result = await asyncio.wait_for(shadow.infer(feeds), self.timeout_s)
            ticket.variant = result.variant
            ticket.timing = _timing(ticket, result)
            self.metrics.shadow.labels(model.name, shadow.version, "answered").inc()
            self._tally(model, shadow.version, "shadow", result.outputs)
            agree = "agree" if _same_top1(primary, result) else "disagree"
            self.metrics.agreement.labels(model.name, shadow.version, agree).inc()
        except Exception as exc:  # a shadow's failure is a figure, never the caller's problem
            code = exc.http_status if isinstance(exc, EdgeError) else 504
            self.metrics.shadow.labels(model.name, shadow.version, "failed").inc()
            self.metrics.failed(model.name, shadow.version, type(exc).__name__)
        finally:
            model.shadow_gate.leave(time.perf_counter() - ticket.started)
        arm = (model.name, shadow.version, ticket.variant, "shadow")
        self.metrics.observe(arm, endpoint, code, ticket.timing)

    async def drain(self) -> None:
        """Wait for the shadow copies still running, close parent connections (at shutdown)."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self.escalator.close()
        if self.capture_file is not None:
            self.capture_file.close()


def _gate(model: ServedModel, delay: QueueDelay) -> Gate:
    """``model``'s admission gate, with the server's delay budget: the catalog sizes gates by
    count, and models placed after start (the edge agent's ``Catalog.place``) get it here."""
    gate = model.gate
    if gate.max_delay_s != delay.budget_s:
        gate.max_delay_s = delay.budget_s
    return gate


def _rows(feeds: Feeds) -> int:
    first = next(iter(feeds.values()), None)
    return int(first.shape[0]) if first is not None and first.ndim else 1


def _timing(ticket: Ticket, result: Result) -> Timing:
    return Timing(
        queue_s=result.queue_ms / 1000.0,
        inference_s=result.inference_ms / 1000.0,
        total_s=time.perf_counter() - ticket.started,
    )


def _same_top1(a: Result, b: Result) -> bool:
    """Whether the first output's arg-max agrees on every sample (class-score outputs)."""
    name = next(iter(a.outputs))
    left, right = a.outputs[name], b.outputs.get(name)
    if right is None or left.shape != right.shape or left.ndim == 0:
        return False
    width = left.shape[0]
    with contextlib.suppress(ValueError):
        return bool(
            np.array_equal(
                left.reshape(width, -1).argmax(axis=1), right.reshape(width, -1).argmax(axis=1)
            )
        )
    return False
