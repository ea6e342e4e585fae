"""The front door: refuse an inference request that already waited too long, before any work.

Under overload the backlog does not form at a model's queue but earlier: requests whose bytes
were read wait in the event loop's ready queue (and, behind it, in the kernel's socket buffers)
until the loop gets to them. A per-model count cannot see them, so the answers come seconds
late although every queue is "short". What bounds that wait is its *age*, as CoDel and
Triton's ``max_queue_delay`` do: the HTTP protocol stamps each request with the moment its
first byte was parsed (:data:`ARRIVED`, set by :mod:`edgeloop.serving.server`), and
:class:`FrontDoor`, the app's first middleware (only the framework's 500 safety net is outside
it), answers a request older than the budget with 429 and ``Retry-After`` at once: no routing,
no body read, no JSON, one small body. Refusing old requests cheaply is what drains the
backlog: the loop then spends its time on requests that can still be answered within the budget.

Only inference requests (``POST .../infer``, ``POST /predict...``) are refused here; health,
metadata, metrics and repository calls always go through. The inference requests the door
admits go straight to their handler (``route``, matched by splitting the path), not through
the framework's routing and exception layers: those cost more per request than the Open
Inference Protocol codec does, and the handlers answer every error themselves.

Without the stamp (another ASGI server runs the app) the door stamps the request itself: its
own waiting then goes unseen, and the models' gates (:mod:`edgeloop.serving.admission`) still
bound what is admitted.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from edgeloop.serving.admission import QueueDelay

# The scope key holding time.perf_counter() at the moment the server parsed the request's first
# byte. ASGI lets servers add keys; this one is ours.
ARRIVED = "edgeloop.arrived"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
# (path, waited_s) of a refused request -> counted by the caller
OnRefuse = Callable[[str, float], None]
# The path's parts after the route's fixed prefix -> (handler, path_params), or None
Route = Callable[[list[str]], tuple[ASGIApp, dict[str, str]] | None]

RETRY_AFTER_S = 1  # the backlog this door sees drains within a delay budget (well under 1 s)
_HINT = (
    "retry after the Retry-After seconds; the server is past its capacity (raise "
    "--max-queue-delay-ms to trade latency for fewer refusals, or add servers)"
)


LABELS = "/labels"


def is_inference(scope: Scope) -> bool:
    """Whether ``scope`` is a request the door may refuse: a POST to an inference route."""
    if scope.get("method") != "POST":
        return False
    path: str = scope.get("path", "")
    if path.endswith(LABELS):  # ground truth, not inference (serving/labels.py)
        return False
    return path.endswith("/infer") or path.startswith("/predict")


def arrived(scope: Scope) -> float:
    """When the server first saw the request (now, if nobody stamped it)."""
    stamp = scope.get(ARRIVED)
    if stamp is None:
        stamp = scope[ARRIVED] = time.perf_counter()
    return float(stamp)


class FrontDoor:
    """ASGI middleware refusing inference requests that waited longer than ``delay`` admits
    (a :class:`~edgeloop.serving.admission.QueueDelay`, by default one of ``max_delay_s``).

    A budget of 0 turns the check off (the stamp is still set, for the latency figures).
    ``refused`` counts the refusals; ``on_refuse`` is told of each (metrics). ``route`` finds
    the handler of an admitted inference request (None: the wrapped app routes it).
    """

    def __init__(
        self,
        app: ASGIApp,
        max_delay_s: float,
        on_refuse: OnRefuse | None,
        route: Route | None = None,
        delay: QueueDelay | None = None,
    ) -> None:
        self.app = app
        self.delay = delay if delay is not None else QueueDelay(max_delay_s)
        self.on_refuse = on_refuse
        self.route = route
        self.refused = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_inference(scope):
            await self.app(scope, receive, send)
            return
        now = time.perf_counter()
        waited = now - arrived(scope)
        if self.delay.admits(waited, now):
            found = self.route(scope["path"].split("/")) if self.route is not None else None
            if found is None:
                await self.app(scope, receive, send)
            else:
                handler, scope["path_params"] = found
                await handler(scope, receive, send)
            return
        self.refused += 1
        if self.on_refuse is not None:
            self.on_refuse(scope["path"], waited)
        body = _refusal(self.delay.describe(waited, now))
        await send({"type": "http.response.start", "status": 429, "headers": _headers(body)})
        await send({"type": "http.response.body", "body": body})


def _refusal(why: str) -> bytes:
    message = f"request refused: {why}"
    return orjson.dumps({"error": message, "type": "QueueDelayError", "hint": _HINT})


_STATIC = [(b"content-type", b"application/json"), (b"retry-after", str(RETRY_AFTER_S).encode())]


def _headers(body: bytes) -> list[tuple[bytes, bytes]]:
    return [*_STATIC, (b"content-length", str(len(body)).encode())]


def inference_route(infer: ASGIApp, predict: ASGIApp) -> Route:
    """The inference routes (``/v2/models/{m}[/versions/{v}]/infer``, ``/predict[/{m}]``),
    matched on the path's parts."""

    def route(parts: list[str]) -> tuple[ASGIApp, dict[str, str]] | None:
        n = len(parts)  # "/v2/models/m/infer" -> ["", "v2", "models", "m", "infer"]
        if n in (5, 7) and parts[1] == "v2" and parts[2] == "models" and parts[3]:
            if n == 5:
                return infer, {"model": parts[3]}
            if parts[4] == "versions" and parts[5]:
                return infer, {"model": parts[3], "version": parts[5]}
            return None
        if n == 2 and parts[1] == "predict":
            return predict, {}
        if n == 3 and parts[1] == "predict" and parts[2]:
            return predict, {"model": parts[2]}
        return None

    return route
