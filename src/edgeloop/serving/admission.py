"""Admission control: a bounded number of requests per model, refused at once beyond it.

A server that queues without bound under overload answers every request late and grows its
memory until it dies; one that refuses early answers the admitted requests on time and tells the
others when to come back. :class:`Gate` counts a model's admitted requests (waiting or running)
and refuses the one past ``limit`` with :class:`QueueFullError` (429) and a ``Retry-After``.

Everything runs on the event loop's thread, so plain integers need no lock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from edgeloop.core.errors import ConfigError
from edgeloop.serving.errors import QueueFullError

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
    in_flight: int = 0
    admitted: int = 0
    refused: int = 0
    service_s: float = field(default=0.0)

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ConfigError(
                f"model {self.model!r}: queue limit {self.limit} must be >= 1",
                hint="pass --max-queue 1 or more",
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

    def leave(self, seconds: float) -> None:
        """One admitted request finished after ``seconds``."""
        self.in_flight = max(0, self.in_flight - 1)
        if math.isfinite(seconds) and seconds >= 0:
            self.service_s += _EWMA_WEIGHT * (seconds - self.service_s)

    def retry_after_s(self) -> int:
        """Whole seconds (>= 1, <= 60): the recent time in the gate, rounded up."""
        return int(min(MAX_RETRY_AFTER_S, max(1, math.ceil(self.service_s))))
