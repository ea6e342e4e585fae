"""Guessing credentials is slowed: a per-source limit on failed credentials (HTTP 429).

Tokens are 256-bit random (:mod:`edgeloop.control.auth`), so guessing one is hopeless anyway;
this is defence in depth, and it keeps a guessing client from costing the control plane a
database read per guess (3,000 wrong admin tokens at 561/s were all answered 401: issue 17).

Each source address has a leaky bucket: a 401 adds one failure, failures drain at ``per_s``; a
source whose bucket holds ``burst`` failures is answered 429 with ``Retry-After`` *before* any
credential it sends is checked (else the 429s would still say which guesses were wrong). Other
sources are not affected, and a client that fails now and then (a stale token polling every few
seconds) drains faster than it fills. IPv6 sources count per /64 (one host usually holds a whole
/64). The table holds at most ``max_sources`` entries, least recently failed dropped first, so a
flood of sources costs bounded memory. Behind a reverse proxy every request has the proxy's
address: the proxy is then the place to limit (docs/control.md).
"""

from __future__ import annotations

import ipaddress
import math
import os
import time
from collections import OrderedDict
from collections.abc import Callable, MutableMapping
from typing import Any

from edgeloop.core.errors import ConfigError
from edgeloop.serving.errors import RetryableError, error_response

Scope = MutableMapping[str, Any]
BURST = 30
PER_S = 1.0
MAX_SOURCES = 10_000
# Operators may slow the drain (a stricter limit) or speed it up: failures forgiven per second.
PER_S_ENV = "EDGELOOP_AUTH_FAILURES_DRAIN_PER_S"


class TooManyFailuresError(RetryableError):
    """This source sent too many wrong credentials lately (HTTP 429, with ``Retry-After``)."""


class FailureLimit:
    """Failed credentials per source, as leaky buckets (see the module's docstring)."""

    def __init__(
        self,
        burst: int = BURST,
        per_s: float = PER_S,
        max_sources: int = MAX_SOURCES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst, self.per_s, self.max_sources, self.clock = burst, per_s, max_sources, clock
        self.table: OrderedDict[str, tuple[float, float]] = OrderedDict()  # source: (level, at)

    @classmethod
    def from_env(cls, environ: MutableMapping[str, str] | None = None) -> FailureLimit:
        """The limit with ``EDGELOOP_AUTH_FAILURES_DRAIN_PER_S`` as its drain rate, when set.

        Raises:
            ConfigError: the value is not a positive number.
        """
        raw = (os.environ if environ is None else environ).get(PER_S_ENV)
        if raw is None or raw.strip() == "":
            return cls()
        try:
            per_s = float(raw)
        except ValueError:
            per_s = math.nan
        if not (math.isfinite(per_s) and per_s > 0):
            raise ConfigError(
                f"{PER_S_ENV}={raw!r} is not a drain rate; expected a positive number of "
                f"failures forgiven per second (default {PER_S})",
                hint=f"unset {PER_S_ENV} or give it a value such as 1 or 0.1",
            )
        return cls(per_s=per_s)

    def _level(self, source: str, now: float) -> float:
        found = self.table.get(source)
        if found is None:
            return 0.0
        level, at = found
        return max(0.0, level - (now - at) * self.per_s)

    def retry_after(self, source: str) -> int | None:
        """Seconds until ``source`` may try again (None: it may now)."""
        if not self.table:  # nearly always: nothing to look up
            return None
        now = self.clock()
        level = self._level(key(source), now)
        if level < self.burst:
            return None
        return max(1, math.ceil((level - self.burst + 1) / self.per_s))

    def failed(self, source: str) -> None:
        """Count one failed credential from ``source``."""
        now, name = self.clock(), key(source)
        self.table[name] = (self._level(name, now) + 1.0, now)
        self.table.move_to_end(name)
        while len(self.table) > self.max_sources:
            self.table.popitem(last=False)

    def refusal(self, source: str) -> TooManyFailuresError | None:
        """The error to answer ``source`` with, or None when it may go on."""
        wait = self.retry_after(source)
        if wait is None:
            return None
        return TooManyFailuresError(
            f"too many wrong credentials from {source} lately; try again in {wait} s",
            retry_after_s=wait,
            hint="check the token (admin: HOME/control/admin.token; a node: enroll it again)",
        )


def key(source: str) -> str:
    """The bucket of a source address: itself, or its /64 for IPv6."""
    if ":" not in source:
        return source
    try:
        return str(ipaddress.ip_network(f"{source}/64", strict=False))
    except ValueError:
        return source


def source_of(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


class Throttled:
    """ASGI layer: a source over its failure limit is answered 429 before anything else."""

    def __init__(self, app: Any, limit: FailureLimit) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self.limit.table:
            refusal = self.limit.refusal(source_of(scope))
            if refusal is not None:
                response = error_response(refusal)
                from edgeloop.control.ui import refusal as ui  # lazy: paid by a refused source

                if ui.wanted(scope):  # a browser asked for a page: HTML, not the API's JSON
                    response = ui.answer(scope, refusal, refusal.retry_after_s)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
