"""Admission control: a bounded number and a bounded wait of requests per model.

A server that queues without bound under overload answers every request late and grows its
memory until it dies; one that refuses early answers the admitted requests on time and tells the
others when to come back. :class:`Gate` counts a model's admitted requests (waiting or running)
and refuses one with :class:`QueueFullError` (429) and a ``Retry-After`` when ``limit`` are in
flight, or when the wait it would have, estimated from the measured engine time per request
(``in_flight x work_s``), is above ``max_delay_s`` (Triton's ``max_queue_delay``, decided at the
door instead of after the wait). The wait before a request reaches any gate (the event loop,
the socket) is bounded by :mod:`edgeloop.serving.front`.

Everything runs on the event loop's thread, so plain integers need no lock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from edgeloop.core.errors import ConfigError
from edgeloop.serving.errors import QueueFullError


class QueueDelayError(QueueFullError):
    """Refused for the wait, not the count: the request waited, or would wait, longer than
    the queue delay budget (``--max-queue-delay-ms``). Still 429 with ``Retry-After``."""


class QueueDelay:
    """The server-wide bound on how long a request may wait for its turn (CoDel's idea).

    A fixed bound alone lets a queue *stand* at that bound under sustained overload: every
    admitted request then waits nearly the whole budget. So, as CoDel and the adaptive queue
    timeouts of Facebook's RPC servers do, the bound tightens while the queue has not been
    short for a while: a request may wait up to ``budget_s`` if some request in the last
    ``interval_s`` came to its turn within ``target_s`` (or found no one ahead of it), and only
    up to ``target_s`` otherwise. Bursts get the whole budget; a standing overload drains to
    ``target_s``. ``target_s`` is a quarter of the budget, ``interval_s`` half of it.

    Runs on the event loop's thread only: no lock.
    """

    __slots__ = ("_last_turn", "_short_at", "budget_s", "interval_s", "target_s")

    def __init__(self, budget_s: float) -> None:
        if not math.isfinite(budget_s) or budget_s < 0:
            raise ConfigError(
                f"queue delay budget {budget_s} s must be >= 0",
                hint="pass --max-queue-delay-ms 0 (no bound) or more",
            )
        self.budget_s = budget_s
        self.target_s = budget_s / 4
        self.interval_s = budget_s / 2
        self._short_at = -math.inf  # when a request last came to its turn within target_s
        self._last_turn = -math.inf  # when the previous request came to its turn

    def limit_s(self, now: float) -> float:
        """The longest wait admitted at ``now``."""
        return self.budget_s if now - self._short_at <= self.interval_s else self.target_s

    def admits(self, waited_s: float, now: float) -> bool:
        """Whether a request that came to its turn at ``now`` after ``waited_s`` goes on."""
        if self.budget_s <= 0:
            return True
        # Short: it waited little, or it arrived after the previous turn (the queue was empty).
        if waited_s <= self.target_s or now - waited_s >= self._last_turn:
            self._short_at = now
        self._last_turn = now
        return waited_s <= self.limit_s(now)

    def check(self, model: str, waited_s: float, now: float, retry_after_s: int = 1) -> None:
        """Raise :class:`QueueDelayError` unless :meth:`admits`."""
        if not self.admits(waited_s, now):
            raise QueueDelayError(
                f"request for model {model!r} refused: {self.describe(waited_s, now)}",
                retry_after_s=retry_after_s,
                hint="retry after the Retry-After seconds; the server is past its capacity",
            )

    def describe(self, waited_s: float, now: float) -> str:
        """Why a request that waited ``waited_s`` was refused (for the answer's message)."""
        limit = self.limit_s(now)
        why = (
            ""
            if limit >= self.budget_s
            else f"; under sustained overload the limit is a quarter of the budget, "
            f"{limit * 1000:g} ms"
        )
        return (
            f"it waited {waited_s * 1000:.0f} ms in the server before its turn, above the queue "
            f"delay budget (--max-queue-delay-ms {self.budget_s * 1000:g}){why}"
        )


_EWMA_WEIGHT = 0.1  # the last ~10 requests dominate the service time estimate
MAX_RETRY_AFTER_S = 60


@dataclass(slots=True)
class Gate:
    """Admits at most ``limit`` concurrent requests for ``model``.

    ``service_s`` is an exponentially weighted mean of how long admitted requests stayed
    admitted (waiting and running). A request refused now would, admitted, have waited about
    that long, so its rounded-up value is the ``Retry-After`` estimate: the backlog the gate
    holds drains in about that time.
    """

    model: str
    limit: int
    max_delay_s: float = 0.0  # 0: no delay bound, only ``limit``
    in_flight: int = 0
    admitted: int = 0
    refused: int = 0
    service_s: float = field(default=0.0)
    work_s: float = field(default=0.0)  # engine time per request (a batch's time / its size)

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ConfigError(
                f"model {self.model!r}: queue limit {self.limit} must be >= 1",
                hint="pass --max-queue 1 or more",
            )
        if not math.isfinite(self.max_delay_s) or self.max_delay_s < 0:
            raise ConfigError(
                f"model {self.model!r}: queue delay budget {self.max_delay_s} s must be >= 0",
                hint="pass --max-queue-delay-ms 0 (no bound) or more",
            )

    def enter(self) -> None:
        """Admit one request, or raise :class:`QueueFullError` when ``limit`` are in flight."""
        self.check()
        self.in_flight += 1
        self.admitted += 1

    def check(self) -> None:
        """Raise :class:`QueueFullError` if a request would be refused now (admits nothing).

        The server calls it before reading a body, so a refusal costs as little as possible
        when refusals are what an overloaded server spends its time on.
        """
        if self.in_flight >= self.limit:
            self.refused += 1
            raise QueueFullError(
                f"model {self.model!r} has {self.in_flight} requests in flight, its queue "
                f"limit (--max-queue {self.limit}); request refused",
                retry_after_s=self.retry_after_s(),
                hint="retry after the Retry-After seconds, or start the server with more "
                "--max-queue / --max-batch",
            )
        wait_s = self.expected_wait_s()
        if 0 < self.max_delay_s < wait_s:
            self.refused += 1
            raise QueueDelayError(
                f"model {self.model!r} has {self.in_flight} requests in flight, about "
                f"{wait_s * 1000:.0f} ms of work at {self.work_s * 1000:.2f} ms each, above "
                f"the queue delay budget (--max-queue-delay-ms {self.max_delay_s * 1000:g}); "
                "request refused",
                retry_after_s=self.retry_after_s(),
                hint="retry after the Retry-After seconds, or start the server with more "
                "--max-queue-delay-ms / --max-batch",
            )

    def expected_wait_s(self) -> float:
        """How long a request admitted now would wait: the work in flight, one at a time."""
        return self.in_flight * self.work_s

    def leave(self, seconds: float, work_s: float = math.nan) -> None:
        """One admitted request finished after ``seconds``; ``work_s``: its engine time share."""
        self.in_flight = max(0, self.in_flight - 1)
        if math.isfinite(seconds) and seconds >= 0:
            self.service_s += _EWMA_WEIGHT * (seconds - self.service_s)
        if math.isfinite(work_s) and work_s >= 0:
            self.work_s += _EWMA_WEIGHT * (work_s - self.work_s)

    def retry_after_s(self) -> int:
        """Whole seconds (>= 1, <= 60): the recent time in the gate, rounded up."""
        return int(min(MAX_RETRY_AFTER_S, max(1, math.ceil(self.service_s))))


class Departures:
    """How fast admitted requests leave the server, and so how long a newcomer would wait.

    PIE (RFC 8033, section 4.2) estimates a queue's delay as its length over its measured
    departure rate; here the queue is every inference request admitted and not yet answered,
    wherever it waits (the event loop's ready queue, reading its body, a model's queue, the
    engine). The time between two answers is measured only while other requests were still
    admitted at the first one (the server was busy, not idle, in between), and smoothed over
    about the last ``1 / weight`` answers. ``wait_s(open)`` is then ``open`` answers' time.
    Both the loop-bound case (a fast model run on the event loop, where HTTP work is most of
    a request's cost) and the engine-bound one are covered: nothing about where the time goes
    is assumed. Runs on the event loop's thread only: no lock.
    """

    __slots__ = ("_last", "interval_s", "weight")

    def __init__(self, weight: float = 0.05) -> None:
        if not 0 < weight <= 1:
            raise ConfigError(f"departure weight {weight} must be in (0, 1]")
        self.weight = weight
        self.interval_s = 0.0  # 0 until a busy interval was measured: nobody is refused by it
        self._last = -math.inf  # when the previous answer left

    def left(self, now: float, still_open: int) -> None:
        """One admitted request was answered at ``now``; ``still_open`` are still admitted."""
        busy_since = self._last
        self._last = now if still_open > 0 else -math.inf
        if math.isfinite(busy_since) and now >= busy_since:
            self.interval_s += self.weight * ((now - busy_since) - self.interval_s)

    def wait_s(self, open_requests: int) -> float:
        """The expected wait of a request admitted now behind ``open_requests``."""
        return open_requests * self.interval_s
