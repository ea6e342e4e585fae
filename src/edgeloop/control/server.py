"""Run the control plane under uvicorn, one process (start more on one database to scale).

The socket is bound first (``--port 0`` picks a free port), then the app starts and its ready
facts are handed to ``on_ready``. SIGINT/SIGTERM stop it gracefully.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import ssl
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeloop.control.agent_path import AgentPolls
from edgeloop.control.alerting import Alerting
from edgeloop.control.app import create_app
from edgeloop.control.limits import WireLimits
from edgeloop.control.plane import ControlPlane
from edgeloop.control.protocol import bounded
from edgeloop.core.errors import require
from edgeloop.core.heap import freeze_startup
from edgeloop.core.logs import server_logging
from edgeloop.core.tls import TlsConfig, server_context
from edgeloop.serving.server import accept_tls, bind, listen_url

SWITCH_INTERVAL_S = 0.001


@dataclass(frozen=True, slots=True)
class ReadyInfo:
    """What a started control plane reports."""

    url: str
    pid: int
    home: Path
    db: str
    admin_token_file: Path | None
    tuf_root_version: int
    frozen_objects: int  # start-up objects left out of the GC's scans (edgeloop.core.heap)

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "pid": self.pid,
            "home": str(self.home),
            "db": self.db,
            "admin_token_file": None
            if self.admin_token_file is None
            else str(self.admin_token_file),
            "tuf_root_version": self.tuf_root_version,
            "frozen_objects": self.frozen_objects,
        }


def _text(path: Path | None) -> str | None:
    return None if path is None else str(path)


def run(
    plane: ControlPlane,
    *,
    host: str,
    port: int,
    on_ready: Callable[[ReadyInfo], None],
    admin_token_file: Path | None,
    tick_s: float = 1.0,
    alerting: Alerting | None = None,
    log_level: str = "warning",
    limits: WireLimits | None = None,
    tls: TlsConfig | None = None,
) -> None:
    """Serve until interrupted. ``limits``: body caps, deadlines and connection bounds
    (:class:`~edgeloop.control.limits.WireLimits`; its defaults when None); ``tls``: the
    certificate and key to serve HTTPS with (and a client CA for mutual TLS).

    Raises:
        MissingDependencyError: uvicorn is not installed (the ``control`` extra).
        ConfigError: the address cannot be bound; a TLS file is missing, mismatched or expired.
    """
    require("uvicorn", "control", "edgeloop control")
    context = server_context(tls or TlsConfig())  # checked before the port is taken
    # Threads waiting on the database (reads on PostgreSQL, the group commit) get the GIL back
    # within 1 ms instead of CPython's 5 ms while the event loop is busy: with the default, a
    # busy loop held each read thread up to 5 ms per query, which capped polls at about
    # threads / 5 ms (docs/benchmarks.md "Fleet scale").
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        with bind(host, port) as sock, asyncio.Runner(loop_factory=_loop_factory()) as runner:
            wire = limits or WireLimits()
            args = (plane, sock, on_ready, admin_token_file, tick_s, log_level, wire, context)
            serve = _serve(*args, alerting=alerting)
            runner.run(serve)
    finally:
        signal.signal(signal.SIGTERM, previous)
        plane.close()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop where it is installed (the ``control`` extra), else asyncio's.

    uvicorn picks uvloop only for a loop it starts itself; this process starts its own loop to
    bind the socket first, so it picks here. uvloop's transports and callbacks run in C: on
    PostgreSQL the loop carries every read and its answer (docs/benchmarks.md "Fleet scale").
    """
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


async def _serve(
    plane: ControlPlane,
    sock: socket.socket,
    on_ready: Callable[[ReadyInfo], None],
    admin_token_file: Path | None,
    tick_s: float,
    log_level: str,
    limits: WireLimits,
    context: ssl.SSLContext | None = None,
    *,
    alerting: Alerting | None = None,
) -> None:
    import uvicorn

    # The agents' polls are answered in front of the framework; everything else by the app.
    inner = create_app(plane, tick_s=tick_s, limits=limits, alerting=alerting)
    app = AgentPolls(inner, plane.hot[0], inner.state.failures)
    # Bounded connections: header and body deadlines, header size, connection count.
    http = bounded(limits, inner.state.bodies)
    server_logging()
    # log_config=None: uvicorn's dictConfig would close the process's other handlers (core/logs.py).
    config = uvicorn.Config(
        app,
        log_config=None,
        log_level=log_level,
        access_log=False,
        http=http,
        ssl_context_factory=None if context is None else (lambda _config, _default: context),
    )
    server = uvicorn.Server(config)
    url = listen_url(sock, context is not None)
    # Over TLS the connections are taken by an Acceptor, whose handshakes have a deadline.
    serving = asyncio.ensure_future(server.serve(sockets=[] if context else [sock]))
    while not server.started and not serving.done():
        await asyncio.sleep(0.01)
    if serving.done():
        await serving  # startup failed: raise its error
        return
    acceptor = None if context is None else accept_tls(server, sock, context)
    frozen = freeze_startup()  # the full collections' pauses on the loop: see edgeloop.core.heap
    on_ready(
        ReadyInfo(
            url=url,
            pid=os.getpid(),
            home=plane.settings.home,
            db=plane.db.display_url,
            admin_token_file=admin_token_file,
            tuf_root_version=plane.repo.versions()["root"],
            frozen_objects=frozen,
        )
    )
    try:
        await serving
    finally:
        if acceptor is not None:
            acceptor.stop()
