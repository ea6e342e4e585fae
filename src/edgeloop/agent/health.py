"""The health window: the agent's own server's request, error and latency figures, measured.

:class:`HealthRecorder` is an ASGI middleware around the inference app: for every inference
request (``POST /v2/models/.../infer``, ``POST /predict...``) it records when it ended, its
status code and its time in the app. The WATCH state asks for the figures since ACTIVATE; the
report for those of the last ``window_s`` seconds. An error is an answer with status >= 500 (a
4xx is the client's fault, not the model's).
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_KEEP = 100_000  # records kept: minutes of traffic at the rates an edge node serves


@dataclass(frozen=True, slots=True)
class HealthFigures:
    window_s: float
    requests: int
    errors: int
    error_rate: float | None  # None: no request in the window
    p99_ms: float | None  # nearest-rank 99th percentile of the time in the app; None: no request

    def to_dict(self) -> dict[str, Any]:
        return {
            "window_s": round(self.window_s, 3),
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": self.error_rate,
            "p99_ms": self.p99_ms,
        }


def _is_inference(scope: Scope) -> bool:
    path = str(scope.get("path", ""))
    return scope.get("method") == "POST" and (
        (path.startswith("/predict") and not path.endswith("/labels"))
        or (path.startswith("/v2/models/") and path.endswith("/infer"))
    )


def nearest_rank(values: list[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (0 < q <= 1) of non-empty ``values``."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


class HealthRecorder:
    """ASGI middleware recording (end time, status, seconds) of each inference request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.records: deque[tuple[float, int, float]] = deque(maxlen=_KEEP)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _is_inference(scope):
            await self.app(scope, receive, send)
            return
        start = time.monotonic()
        status = 500  # an app that raises before answering counts as an error

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            end = time.monotonic()
            self.records.append((end, status, end - start))

    def figures(self, since: float) -> HealthFigures:
        """Figures of the requests that ended at or after ``since`` (a ``time.monotonic()``)."""
        now = time.monotonic()
        window = [r for r in self.records if r[0] >= since]
        errors = sum(1 for r in window if r[1] >= 500)
        return HealthFigures(
            window_s=now - since,
            requests=len(window),
            errors=errors,
            error_rate=errors / len(window) if window else None,
            p99_ms=nearest_rank([r[2] for r in window], 0.99) * 1000 if window else None,
        )
