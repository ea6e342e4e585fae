"""Who may change what a server serves: the state-changing routes and their one gate.

The routes that change what is served are ``POST /v2/repository/models/{m}/load`` and
``/unload`` (Triton's repository extension) and ``PUT /v2/models/{m}/power-budget``. Everything
else only reads or answers inference. :class:`AdminGate` decides, in one place, whether a
request may call them:

- **open** (``AdminGate()``): anyone who reaches the port may. ``edgeloop serve`` is the
  operator's own server, like ``tritonserver --model-control-mode explicit``; this stays its
  default so scripts keep working on a loopback port.
- **token** (``AdminGate(token=...)``; ``edgeloop serve`` reads ``EDGELOOP_SERVE_ADMIN_TOKEN``):
  ``Authorization: Bearer <token>`` is required (401 without it, 403 with a wrong one), compared
  in constant time. For a server whose port others can reach.
- **closed** (``AdminGate.closed(owner)``): nobody may (403 naming the owner). ``edgeloop agent``
  closes them: what a node serves is the control plane's desired state, applied by the agent's
  updater after TUF verification, self-test and a watch window. A second, local way to swap or
  drop the model would bypass all of that, and the node's report could not follow it; so the
  agent offers none, with or without a credential (issue 17, item 1).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import ClassVar

from starlette.requests import Request

from edgeloop.core.errors import ConfigError, EdgeError

ADMIN_ENV = "EDGELOOP_SERVE_ADMIN_TOKEN"


class UnauthorizedError(EdgeError):
    """A state-changing route was called without the server's admin token."""

    exit_code = 2
    http_status: ClassVar[int] = 401


class ForbiddenError(EdgeError):
    """A state-changing route was called with a wrong token, or on a server that closes it."""

    exit_code = 2
    http_status: ClassVar[int] = 403


@dataclass(frozen=True, slots=True)
class AdminGate:
    """Open (no token, no owner), token-guarded, or closed (``owner`` set)."""

    token: str | None = None
    owner: str | None = None  # who changes what is served instead (closed gate)

    def __post_init__(self) -> None:
        if self.token is not None and len(self.token) < 16:
            raise ConfigError(
                f"the admin token has {len(self.token)} characters; at least 16 are needed",
                hint="e.g. export EDGELOOP_SERVE_ADMIN_TOKEN=$(openssl rand -hex 32)",
            )

    @classmethod
    def closed(cls, owner: str) -> AdminGate:
        return cls(owner=owner)

    @property
    def mode(self) -> str:
        """``open``, ``token`` or ``closed`` (shown by ``GET /v2``)."""
        return "closed" if self.owner else ("token" if self.token else "open")

    def check(self, request: Request, action: str) -> None:
        """Return if ``request`` may do ``action``; raise otherwise.

        Raises:
            ForbiddenError: the gate is closed, or the token is wrong.
            UnauthorizedError: a token is required and none was sent.
        """
        if self.owner is not None:
            raise ForbiddenError(
                f"{action} is not offered by this server: {self.owner}",
                hint="change what this node serves through the control plane (a deployment)",
            )
        if self.token is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise UnauthorizedError(
                f"{action} needs the server's admin token",
                hint="send Authorization: Bearer $EDGELOOP_SERVE_ADMIN_TOKEN",
            )
        if not hmac.compare_digest(given.strip().encode(), self.token.encode()):
            raise ForbiddenError(
                f"{action}: the bearer token is not this server's admin token",
                hint="send the token the server was started with (EDGELOOP_SERVE_ADMIN_TOKEN)",
            )
