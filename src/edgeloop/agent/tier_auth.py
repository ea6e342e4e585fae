"""Who may download from a parent's tier cache: nodes of the same control plane.

A child sends its own node token (``Authorization: Bearer``) and node id (``X-Edgeloop-Node``),
the credentials it already uses with the control plane; it holds no extra secret. The parent
asks the control plane whether they go together with the cheapest call a node token may make,
``GET /api/v1/nodes/{id}/desired`` (one indexed read, no side effect): 200 or 304 is a node of
this fleet, which is exactly who the control plane itself serves ``artifacts/`` targets to.
A yes is remembered for ``ttl_s`` (a revoked node keeps access to the cache that long, never to
a deployment document or to the control plane), a no for ``deny_ttl_s`` (so a wrong token
cannot make the parent hammer the control plane). Only a hash of the token is kept in memory.
While the control plane cannot be reached, a yes older than ``ttl_s`` still counts for
``offline_grace_s`` (children of a cut-off site keep getting what the parent holds); a child
never seen before is refused (503: it falls back to the control plane itself).
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from typing import ClassVar

import httpx

from edgeloop.agent.fetcher import NODE_HEADER
from edgeloop.core.errors import EdgeError, TransportError
from edgeloop.core.tls import client_verify

_NODE_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")  # goes into a URL path: no '/', no '..'
ControlURL = Callable[[], str | None]


class ChildRefusedError(EdgeError):
    """A child's credentials are missing or not a node of this parent's control plane."""

    exit_code: ClassVar[int] = 6
    http_status: ClassVar[int] = 403


class ChildAuth:
    """Checks (node id, token) pairs against the control plane ``control()`` and remembers."""

    def __init__(
        self,
        control: ControlURL,
        *,
        ttl_s: float = 600.0,
        deny_ttl_s: float = 30.0,
        offline_grace_s: float = 86_400.0,
        timeout_s: float = 5.0,
    ) -> None:
        self.control = control
        self.ttl_s = ttl_s
        self.deny_ttl_s = deny_ttl_s
        self.offline_grace_s = offline_grace_s
        self.timeout_s = timeout_s
        self._seen: dict[tuple[str, str], tuple[bool, float]] = {}
        self.checks = 0  # calls to the control plane
        self.refused = 0

    async def check(self, authorization: str | None, node_id: str | None) -> str:
        """The child's node id when it may download.

        Raises:
            ChildRefusedError (403): no bearer token or node id, or the control plane says
                they are not a node's.
            TransportError (502): the control plane cannot say, and this child was not
                accepted within the offline grace.
        """
        token = (authorization or "").removeprefix("Bearer ").strip()
        if not token or not node_id or authorization == token or not _NODE_ID.match(node_id):
            self.refused += 1
            raise ChildRefusedError(
                f"a child must send 'Authorization: Bearer <node token>' and {NODE_HEADER} "
                f"(letters, digits, '-' and '_'); got node {str(node_id)[:64]!r}",
                hint="start the child with --parent; it sends its own node credentials",
            )
        key = (node_id, hashlib.sha256(token.encode()).hexdigest())
        now = time.monotonic()
        known = self._seen.get(key)
        if known is not None:
            ok, at = known
            if now - at < (self.ttl_s if ok else self.deny_ttl_s):
                return self._verdict(ok, node_id)
        try:
            ok = await self._ask(node_id, token)
        except TransportError:
            if known is not None and known[0] and now - known[1] < self.offline_grace_s:
                return node_id
            raise
        self._seen[key] = (ok, now)
        return self._verdict(ok, node_id)

    def _verdict(self, ok: bool, node_id: str) -> str:
        if ok:
            return node_id
        self.refused += 1
        raise ChildRefusedError(
            f"node {node_id[:64]!r}: the control plane does not accept this token for it",
            hint="enroll the child with this parent's control plane",
        )

    async def _ask(self, node_id: str, token: str) -> bool:
        control = self.control()
        if control is None:
            raise TransportError("this parent is not enrolled yet; it cannot check children")
        self.checks += 1
        url = f"{control.rstrip('/')}/api/v1/nodes/{node_id}/desired"
        try:
            async with httpx.AsyncClient(timeout=self.timeout_s, verify=client_verify()) as client:
                answer = await client.get(url, headers={"Authorization": f"Bearer {token}"})
        except httpx.HTTPError as exc:
            raise TransportError(
                f"cannot check a child with the control plane: {type(exc).__name__}: {exc}"
            ) from exc
        if answer.status_code in (200, 304):
            return True
        if answer.status_code in (401, 403, 404):
            return False
        raise TransportError(f"the control plane answered {answer.status_code} checking a child")

    def status(self) -> dict[str, int]:
        return {"known_children": len(self._seen), "checks": self.checks, "refused": self.refused}
