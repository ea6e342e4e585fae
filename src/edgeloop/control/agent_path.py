"""The agents' poll answered in front of the web framework.

Nearly every request a fleet sends is ``GET /api/v1/nodes/{id}/desired`` from the node itself,
answered 304 or with a three-field body. Through the framework each one also paid for its
middleware stack, routing, a ``Request`` and a ``Response`` (docs/benchmarks.md "Fleet scale").
:class:`AgentPolls` is a thin ASGI layer around the app: it answers a node's own poll with the
same read (:meth:`edgeloop.control.hotpath.KeptReads.credential`) and the same answer as the
app's route, and hands everything else to the app unchanged, including every poll it cannot
answer plainly (no or a bad token, the admin, another node's id, a database error): the app then
answers it, errors included, exactly as before (and a poll with a body: 413).
"""

from __future__ import annotations

from typing import Any

import orjson

from edgeloop.control import auth
from edgeloop.control.hotpath import KeptReads
from edgeloop.control.throttle import FailureLimit, source_of
from edgeloop.core.errors import EdgeError

Scope = dict[str, Any]
_PREFIX = "/api/v1/nodes/"
_SUFFIX = "/desired"


class AgentPolls:
    """ASGI app: a node's own desired-state poll here, everything else in ``app``."""

    def __init__(self, app: Any, reads: KeptReads, failures: FailureLimit | None = None) -> None:
        self.app = app
        self.reads = reads
        self.failures = failures  # a source over it is the app's to answer (429)
        self.answered = 0  # polls answered here (a figure for tests)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        node_id = _poll_of(scope)
        throttled = node_id is not None and self._throttled(scope)
        if node_id is not None and not throttled and await self._answer(scope, node_id, send):
            return
        await self.app(scope, receive, send)

    def _throttled(self, scope: Scope) -> bool:
        limit = self.failures
        return (
            limit is not None
            and bool(limit.table)
            and (limit.retry_after(source_of(scope)) is not None)
        )

    async def _answer(self, scope: Scope, node_id: str, send: Any) -> bool:
        """Answer the poll if it is a node's own; False: the app must answer it."""
        token, seen = _headers(scope)
        if token is None:
            return False
        try:
            found = await self.reads.credential(token)
        except EdgeError:
            return False  # the app answers it, with the error the route gives
        if found is None or found[0] != node_id:
            return False
        self.answered += 1
        etag = f'"{found[1]}"'.encode()
        if seen == etag:
            await send({"type": "http.response.start", "status": 304,
                        "headers": [(b"etag", etag)]})  # fmt: skip
            await send({"type": "http.response.body", "body": b""})
            return True
        body = orjson.dumps({"node_id": node_id, "revision": found[1],
                             "target": f"deployments/{node_id}.json"})  # fmt: skip
        headers = [(b"content-length", str(len(body)).encode()),
                   (b"content-type", b"application/json"), (b"etag", etag)]  # fmt: skip
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return True


def _poll_of(scope: Scope) -> str | None:
    """The node id of a ``GET /api/v1/nodes/{id}/desired``, else None."""
    if scope["type"] != "http" or scope["method"] != "GET":
        return None
    path: str = scope["path"]
    if not (path.startswith(_PREFIX) and path.endswith(_SUFFIX)):
        return None
    node_id = path[len(_PREFIX) : -len(_SUFFIX)]
    return node_id if node_id and "/" not in node_id else None


def _headers(scope: Scope) -> tuple[str | None, bytes | None]:
    """The bearer token (None: none, not plainly one, or the poll carries a body, which the
    app's body limits answer) and the ``If-None-Match`` value."""
    header: bytes | None = None
    seen: bytes | None = None
    for name, value in scope["headers"]:  # the first of each, as the app reads them
        if name == b"authorization" and header is None:
            header = value
        elif name == b"if-none-match" and seen is None:
            seen = value
        elif name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
            return None, seen
    if header is None:
        return None, seen
    try:
        return auth.bearer(header.decode("latin-1")), seen
    except EdgeError:
        return None, seen
