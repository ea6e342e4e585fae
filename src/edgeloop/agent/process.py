"""The agent's one OS process: the inference server on ``--port`` and the reconcile loop beside it.

Start order: recover the updater's record (finish or undo what a crash interrupted), check the
active slot (its file hash and self-test; the other slot if it fails), bind the port, serve that
slot, then reconcile. The server is edgeloop's inference server (:mod:`edgeloop.serving`) wrapped
in the health recorder, plus ``GET /agent/status`` (the report the agent would send now). No
torch anywhere: ``/health`` says ``torch_imported: false``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import socket
import ssl
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from edgeloop.agent.activator import CatalogActivator, serving_config, serving_state
from edgeloop.agent.bench_worker import BenchWorker
from edgeloop.agent.experiment import ExperimentHost
from edgeloop.agent.fl_worker import FlWorker
from edgeloop.agent.health import HealthRecorder
from edgeloop.agent.home import AgentHome
from edgeloop.agent.reconcile import AgentOptions, Reconciler
from edgeloop.agent.route_host import RouteSettings
from edgeloop.agent.routes import RouteRunner
from edgeloop.agent.slots import SlotModel
from edgeloop.agent.systemd import notify, watchdog_interval_s
from edgeloop.agent.telemetry import EventedUpdater, Sampler, Telemetry, TelemetrySettings
from edgeloop.agent.tier import ChildService, TierCollector, TierSettings
from edgeloop.agent.tier_auth import ChildAuth
from edgeloop.agent.tier_cache import TierCache
from edgeloop.agent.tier_cascade import ParentCascade
from edgeloop.agent.train_data import lineage_of
from edgeloop.agent.train_worker import CAPTURE_LOG_MB, TrainWorker
from edgeloop.agent.updater import Updater
from edgeloop.core.errors import ConfigError, require
from edgeloop.core.logs import server_logging
from edgeloop.core.tls import TlsConfig, server_context
from edgeloop.serving.admin import AdminGate
from edgeloop.serving.app import Server, create_app
from edgeloop.serving.capture_files import CaptureLog
from edgeloop.serving.catalog import Catalog
from edgeloop.serving.config import ServerConfig
from edgeloop.serving.connections import Sweeper, httptools_protocol
from edgeloop.serving.feedback import monitoring_status
from edgeloop.serving.repository import Origin
from edgeloop.serving.server import accept_tls, bind, listen_url

Announce = Callable[[dict[str, Any]], None]
CLOSED_BY = (
    "this is an edgeloop agent: what it serves is the control plane's desired state, applied "
    "by its updater (verified, self-tested, watched)"
)


def run(
    home: AgentHome,
    options: AgentOptions,
    *,
    host: str,
    port: int,
    announce: Announce,
    config: ServerConfig | None = None,
    log_level: str = "warning",
    telemetry: TelemetrySettings | None = None,
    routes: RouteSettings | None = None,
    tier: TierSettings | None = None,
    tls: TlsConfig | None = None,
) -> None:
    """Serve and reconcile until SIGINT/SIGTERM; ``announce`` gets the ready facts once.
    ``tls``: the server certificate and key of this node's HTTPS (and a client CA for mutual
    TLS); its clients' trust is the process's (:func:`edgeloop.core.tls.configure_clients`).

    Raises:
        MissingDependencyError: the ``serve`` or ``fleet`` extra is missing.
        ConfigError: the port cannot be bound, the agent's state is unreadable, or a TLS file
            is missing, mismatched or expired.
    """
    require("uvicorn", "serve", "edgeloop agent")
    uvloop = require("uvloop", "serve", "edgeloop agent's event loop")
    require("tuf", "fleet", "edgeloop agent's signed updates")
    context = server_context(tls or TlsConfig())
    tel = (telemetry or TelemetrySettings()).open(home, options.name)
    updater = EventedUpdater(home)
    updater.telemetry = tel
    updater.recover()
    active = updater.startup_check()
    origins = [Origin(active.name, active.folder)] if active is not None else []
    base = config or ServerConfig()
    catalog = Catalog(origins, _start_config(base, active))
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        with bind(host, port) as sock:
            uvloop.run(
                _main(
                    catalog,
                    base,
                    updater,
                    home,
                    options,
                    sock,
                    (announce, log_level),
                    tel,
                    routes,
                    tier or TierSettings(),
                    context,
                )
            )
    finally:
        signal.signal(signal.SIGTERM, previous)
        tel.outbox.close()


def _start_config(base: ServerConfig, active: SlotModel | None) -> ServerConfig:
    """The active slot's serving settings (checked when it was activated); else the base."""
    if active is None:
        return base
    try:
        return serving_config(base, active.document)[0]
    except ConfigError:
        return base  # serve with defaults rather than not at all


async def _main(
    catalog: Catalog,
    base: ServerConfig,
    updater: Updater,
    home: AgentHome,
    options: AgentOptions,
    sock: socket.socket,
    output: tuple[Announce, str],
    tel: Telemetry,
    routes: RouteSettings | None = None,
    tier: TierSettings | None = None,
    context: ssl.SSLContext | None = None,
) -> None:
    import uvicorn

    announce, log_level = output
    tier = tier or TierSettings()
    # What this node serves is the control plane's desired state, applied by the updater; the
    # server's load/unload/power-budget routes would be a second, unverified way around it
    # (issue 17 item 1), so they are closed here (serving/admin.py, docs/agent.md).
    app = create_app(catalog, admin=AdminGate.closed(CLOSED_BY))
    service = app.state.server.service
    catalog.monitor_sinks.append(tel.monitor_event)  # drift alarms -> outbox events
    service.capture.sinks.append(tel.capture)  # captured rows -> outbox capture items
    local_captures = CaptureLog(home.root / "captures", CAPTURE_LOG_MB * 2**20)
    service.capture.sinks.append(local_captures)  # and a capped local copy (train_worker.py)
    tel.monitoring = lambda: monitoring_status(catalog)  # in each metrics snapshot
    recorder = HealthRecorder(Sampler(app, tel))
    updater.health = recorder
    url = listen_url(sock, context is not None)
    runner = routes.runner(service, _label_sink(app.state.server)) if routes else None
    reconciler = Reconciler(home, updater, options, recorder, url)
    reconciler.parent = tier.parent
    reconciler.backlog = tel.backlog_report
    arms = ExperimentHost(home, catalog, service.metrics, app.state.server.feedback, reconciler)
    reconciler.serving = lambda model: {
        **serving_state(catalog, model),
        **arms.report(model),
        **lineage_of(model),
    }
    cascade = None
    if tier.cascade_threshold is not None:
        cascade = ParentCascade(tier, service.escalator, catalog, base.cascade_timeout_s)
    activator = CatalogActivator(catalog, base, cascade.follow if cascade else None)
    updater.activator = activator
    reconciler.repair = activator.repair
    children = _children(tier, home, reconciler) if tier.serve_children else None
    if children is not None:
        app.router.add_route("/tier/targets/{path:path}", children.target, methods=["GET"],
                             include_in_schema=False)  # fmt: skip
    service.metrics.registry.register(TierCollector(reconciler.sources, children))

    async def status(request: Request) -> Response:
        body = reconciler.report_body()
        body.update(
            node_id=reconciler.identity.node_id if reconciler.identity else None,
            pid=os.getpid(),
            torch_imported="torch" in sys.modules,
            reports=reconciler.reports,
            repairs=reconciler.repairs,
            telemetry=await tel.status(),
            monitoring=monitoring_status(catalog),
            capture=service.capture.status(),
            routes=_routes_status(runner),
            tier={
                "parent": tier.parent,
                "fetch": reconciler.sources.to_dict(),
                "cascade": cascade.status(service.metrics) if cascade else None,
                "children": children.status() if children else None,
            },
        )
        return Response(orjson.dumps(body), media_type="application/json")

    app.router.add_route("/agent/status", status, methods=["GET"], include_in_schema=False)
    limits = base.connections  # slow or silent clients are cut off (serving/connections.py)
    server_logging()
    server = uvicorn.Server(
        uvicorn.Config(
            recorder,
            http=httptools_protocol(limits),
            lifespan="off",
            log_config=None,  # core/logs.py: dictConfig would close the process's other handlers
            log_level=log_level,
            access_log=False,
            timeout_keep_alive=math.ceil(limits.keep_alive_s),
            ssl_context_factory=None if context is None else (lambda _config, _default: context),
        )
    )
    # Over TLS the connections are taken by an Acceptor, whose handshakes have a deadline.
    serving = asyncio.ensure_future(server.serve(sockets=[] if context else [sock]))
    acceptor = None
    if context is not None:
        while not server.started and not serving.done():
            await asyncio.sleep(0.01)
        if not serving.done():
            acceptor = accept_tls(server, sock, context)
    try:
        await catalog.start()
    except BaseException:
        server.should_exit = True
        await serving
        if acceptor is not None:
            acceptor.stop()
        raise
    if cascade is not None:
        await cascade.follow(next(iter(catalog.models), None))
    while not server.started and not serving.done():
        await asyncio.sleep(0.01)
    if serving.done():
        await serving
        return
    active = updater.slots.read(updater.slots.active_name())
    announce(
        {
            "url": url,
            "pid": os.getpid(),
            "home": str(home.root),
            "active": active.to_dict() if active else None,
            "self_test": updater.self_test.to_dict() if updater.self_test else None,
            "updater": updater.record.state.value,
            "torch_imported": "torch" in sys.modules,
        }
    )
    tel.model = lambda: _served(updater)
    loop = asyncio.get_running_loop().create_task(reconciler.run_forever())
    side = [
        asyncio.ensure_future(tel.run_metrics(recorder)),
        asyncio.ensure_future(tel.run_shipper(lambda: reconciler.identity)),
        asyncio.ensure_future(_watchdog(reconciler)),
        asyncio.ensure_future(Sweeper(server.server_state.connections, limits).run()),
        asyncio.ensure_future(arms.run(options.poll_s)),  # fleet A/B experiments
        asyncio.ensure_future(FlWorker(home, lambda: reconciler.identity, recorder).run()),
        asyncio.ensure_future(
            BenchWorker(updater.slots, lambda: reconciler.identity).run(options.poll_s)
        ),
        asyncio.ensure_future(
            TrainWorker(
                home,
                updater,
                lambda: reconciler.identity,
                local_captures,
                options.name,
                lambda: reconciler.updating,
            ).run(options.poll_s)
        ),
    ]
    stop_routes = asyncio.Event()
    if runner is not None:
        side.append(asyncio.ensure_future(runner.run(stop_routes)))
    notify("READY=1")
    try:
        await serving
    finally:
        stop_routes.set()
        for task in [loop, *side]:
            task.cancel()
        for task in [loop, *side]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if reconciler.update_task is not None:
            reconciler.update_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reconciler.update_task
        if acceptor is not None:
            acceptor.stop()
        await app.state.server.service.drain()
        await catalog.stop()
        local_captures.close()  # what the last second captured


def _children(tier: TierSettings, home: AgentHome, reconciler: Reconciler) -> ChildService:
    """The tier cache of ``--serve-children``, downloading with this node's own identity."""

    def upstream() -> tuple[str, str] | None:
        who = reconciler.identity
        return (who.targets_url, who.node_token) if who is not None else None

    def control() -> str | None:
        return reconciler.identity.control if reconciler.identity is not None else None

    cache = TierCache(home.root / "tier-cache", upstream, max_bytes=int(tier.cache_mb * 2**20))
    return ChildService(cache, ChildAuth(control))


def _served(updater: Updater) -> tuple[str | None, str | None]:
    """The active slot's model name and version (what metrics snapshots are about)."""
    active = updater.slots.read(updater.slots.active_name())
    return (active.name, str(active.version)) if active else (None, None)


async def _watchdog(reconciler: Reconciler) -> None:
    """``WATCHDOG=1`` every half watchdog interval while the reconcile loop makes progress.

    Progress: the loop waits between passes, or its last beat (each pass and each second of its
    wait) is younger than the full watchdog interval. A pass that hangs (or an event loop that is
    blocked) stops the pings, and systemd restarts the agent. Without ``WATCHDOG_USEC`` this
    returns at once.
    """
    interval = watchdog_interval_s()
    if interval is None:
        return
    while True:
        if reconciler.waiting or time.monotonic() - reconciler.beat < 2 * interval:
            notify("WATCHDOG=1")
        await asyncio.sleep(interval)


def _routes_status(runner: RouteRunner | None) -> dict[str, Any] | None:
    if runner is None:
        return None
    return {
        "connected": runner.connected.is_set(),
        "reconnects": runner.reconnects,
        "last_error": runner.last_error,
        "unrouted": runner.unrouted,
        "routes": runner.snapshot(),
        "labels": dict(runner.label_counts),
        "last_label_error": runner.last_label_error,
    }


def _label_sink(server: Server) -> Callable[[bytes], dict[str, Any]]:
    """MQTT label messages applied by the node's server (``{"model": NAME, ...}``)."""

    def apply(body: bytes) -> dict[str, Any]:
        models = server.catalog.models
        only = next(iter(models)) if len(models) == 1 else None
        return server.feedback.apply(None, body, only)

    return apply
