"""Run the app under uvicorn (httptools parser, uvloop event loop), one process.

The socket is bound before anything loads, so ``--port 0`` works and the port is announced at
once; the models load while the server already answers ``/v2/health/live`` (and 503 with
``Retry-After`` to inference). A model that fails to load stops the server with its error.
With ``EDGELOOP_SERVE_ADMIN_TOKEN`` set, the routes that change what is served (load, unload,
power-budget) need ``Authorization: Bearer <token>`` (:mod:`edgeloop.serving.admin`).
Each connection is bounded (:mod:`edgeloop.serving.connections`): time to send the headers
and the body, idle keep-alive time, header size, and the number of connections. An inference
request past its model's queue limits is refused from its headers, before its body is read
(:mod:`edgeloop.serving.shed`; ``--no-early-refusal`` leaves it to the app).
On SIGINT/SIGTERM uvicorn stops accepting, finishes the requests in flight, then the batchers
drain and the models are released.
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import socket
import ssl
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from edgeloop.core.errors import ConfigError, require
from edgeloop.core.logs import server_logging
from edgeloop.core.tls import TlsConfig, server_context
from edgeloop.runtime.memory import MB, rss_bytes
from edgeloop.serving.acceptor import Acceptor
from edgeloop.serving.admin import ADMIN_ENV, AdminGate
from edgeloop.serving.app import create_app
from edgeloop.serving.catalog import Catalog, SwapReport
from edgeloop.serving.config import ServerConfig
from edgeloop.serving.connections import Sweeper, bounded_protocol
from edgeloop.serving.front import ARRIVED
from edgeloop.serving.repository import Origin
from edgeloop.serving.shed import Door, door_protocol

Announce = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class ReadyInfo:
    """What a started server reports once every model is loaded (measured at that moment)."""

    url: str
    pid: int
    models: tuple[SwapReport, ...]
    idle_rss_mb: float | None
    torch_imported: bool
    config: ServerConfig

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "pid": self.pid,
            "models": [m.to_dict() for m in self.models],
            "idle_rss_mb": self.idle_rss_mb,
            "torch_imported": self.torch_imported,
            "config": self.config.to_dict(),
        }


def run(
    origins: Sequence[Origin],
    config: ServerConfig,
    *,
    host: str,
    port: int,
    announce: Announce,
    on_ready: Callable[[ReadyInfo], None],
    log_level: str = "warning",
    tls: TlsConfig | None = None,
) -> None:
    """Serve until interrupted; ``announce`` gets progress lines, ``on_ready`` the ready facts.
    ``tls``: the certificate and key to serve HTTPS with (and a client CA for mutual TLS).

    Raises:
        MissingDependencyError: uvicorn or uvloop is not installed (the ``serve`` extra).
        ConfigError: the address cannot be bound; ``EDGELOOP_SERVE_ADMIN_TOKEN`` is set but
            shorter than 16 characters; a TLS file is missing, mismatched or expired.
        What loading a model raises (NotFoundError, UntrustedArtifactError, ...).
    """
    require("uvicorn", "serve", "edgeloop serve")
    uvloop = require("uvloop", "serve", "edgeloop serve's event loop")
    catalog = Catalog(origins, config)  # checks the routing before a port is taken
    admin = AdminGate(token=os.environ.get(ADMIN_ENV) or None)  # a short token: refused here
    context = server_context(tls or TlsConfig())
    # uvicorn re-raises a caught SIGTERM once it has shut down gracefully; the default action
    # would kill the process before the batchers drain, so make that re-raise a no-op.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        with bind(host, port) as sock:
            uvloop.run(_serve(catalog, sock, (announce, on_ready), log_level, admin, context))
    finally:
        signal.signal(signal.SIGTERM, previous)


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket on ``host:port`` (port 0: any free port).

    Raises:
        ConfigError: the address is in use or cannot be bound.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except (OSError, OverflowError) as exc:  # OverflowError: a port outside 0-65535
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port}: {getattr(exc, 'strerror', None) or exc}",
            hint="pick another --port (0 picks a free one), or stop the process using it",
        ) from exc
    sock.set_inheritable(True)
    return sock


def listen_url(sock: socket.socket, tls: bool) -> str:
    """``http(s)://host:port`` of a bound socket (IPv6 hosts in brackets)."""
    host, port = sock.getsockname()[:2]
    scheme = "https" if tls else "http"
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def accept_tls(server: Any, sock: socket.socket, context: ssl.SSLContext) -> Acceptor:
    """Take bound ``sock``'s connections for the started uvicorn ``server``, over TLS with a
    bounded handshake (:data:`~edgeloop.serving.acceptor.HANDSHAKE_TIMEOUT_S`): uvicorn's own
    listener takes no handshake deadline, and uvloop's default lets a silent client hold a
    socket for 60 s before any of the server's own bounds starts. Start uvicorn with
    ``sockets=[]``; stop the returned acceptor once it has served."""
    sock.listen(server.config.backlog)
    acceptor = Acceptor(sock, lambda: _protocol(server), lambda: server.should_exit, context)
    acceptor.start()
    return acceptor


def _protocol(server: Any) -> asyncio.Protocol:
    """The protocol uvicorn's own listener would create for a new connection."""
    config = server.config
    protocol: asyncio.Protocol = config.http_protocol_class(
        config=config, server_state=server.server_state, app_state=server.lifespan.state
    )
    return protocol


def stamping_protocol() -> type[Any]:
    """uvicorn's httptools protocol, stamping each request with when its first byte was parsed.

    The stamp (``scope[edgeloop.serving.front.ARRIVED]``) is what the front door ages requests
    by: from that moment on, every wait in the process (the event loop's ready queue, a
    model's queue) is seen and bounded. Pass it to ``uvicorn.Config(http=...)`` when embedding
    the app in another uvicorn server.

    Raises:
        MissingDependencyError: uvicorn or httptools is not installed (the ``serve`` extra).
    """
    require("httptools", "serve", "edgeloop serve's HTTP parser")
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class StampingProtocol(HttpToolsProtocol):
        def on_message_begin(self) -> None:
            super().on_message_begin()
            self.scope[ARRIVED] = time.perf_counter()  # type: ignore[literal-required]

    return StampingProtocol


async def _serve(
    catalog: Catalog,
    sock: socket.socket,
    report: tuple[Announce, Callable[[ReadyInfo], None]],
    log_level: str,
    admin: AdminGate,
    context: ssl.SSLContext | None = None,
) -> None:
    import uvicorn

    app = create_app(catalog, admin=admin)
    limits = catalog.config.connections
    protocol = stamping_protocol()
    if catalog.config.early_refusal:  # refusals from the headers: serving/shed.py
        routes = app.state.server
        protocol = door_protocol(protocol, Door(catalog, routes.metrics, routes.service.delay))
    server_logging()
    config = uvicorn.Config(
        app,
        http=bounded_protocol(protocol, limits),
        lifespan="off",
        log_config=None,  # core/logs.py: dictConfig would close the process's other handlers
        log_level=log_level,
        access_log=False,
        proxy_headers=False,  # no proxy in front by default; saves a layer per request
        timeout_keep_alive=math.ceil(limits.keep_alive_s),  # the sweeper holds the exact bound
        # https in the scope; the Acceptor below does the handshakes with the same context
        ssl_context_factory=None if context is None else (lambda _config, _default: context),
    )
    server = uvicorn.Server(config)
    sweeper = asyncio.ensure_future(Sweeper(server.server_state.connections, limits).run())
    announce, on_ready = report
    url = listen_url(sock, context is not None)
    # No socket for uvicorn: the Acceptor takes the connections (see its module) and hands them
    # to uvicorn's own protocol; uvicorn still runs the requests, the shutdown and the signals.
    serving = asyncio.ensure_future(server.serve(sockets=[]))
    while not server.started and not serving.done():
        await asyncio.sleep(0.01)  # uvicorn's startup runs in the serving task
    if serving.done():
        sweeper.cancel()
        await serving  # startup failed: raise its error
        return
    sock.listen(config.backlog)
    acceptor = Acceptor(sock, lambda: _protocol(server), lambda: server.should_exit, context)
    acceptor.start()
    announce(f"listening on {url} (pid {os.getpid()}); loading {len(catalog.models)} model(s)")
    try:
        reports = await catalog.start()
    except BaseException:
        sweeper.cancel()
        acceptor.stop()
        server.should_exit = True
        await serving
        raise
    rss = rss_bytes()
    on_ready(
        ReadyInfo(
            url=url,
            pid=os.getpid(),
            models=tuple(reports),
            idle_rss_mb=None if rss is None else rss / MB,
            torch_imported="torch" in sys.modules,
            config=catalog.config,
        )
    )
    try:
        await serving
    finally:
        sweeper.cancel()
        acceptor.stop()
        await app.state.server.service.drain()
        await catalog.stop()
