"""The control plane's HTTP edge (docs/fleet-protocol.md is the contract).

=========================================  =========  ========================================
route                                      auth       answer
=========================================  =========  ========================================
``GET  /healthz``                          none       ``{"status": "ok", "version"}``
``POST /api/v1/enrollment-tokens``         admin      ``{"token", "expires_at"}``
``POST /api/v1/enroll``                    enroll tk  ``{"node_id", "node_token", "tuf"}``
``GET  /api/v1/nodes[/{id}]``              admin      nodes / node
``PATCH /api/v1/nodes/{id}``               admin      node
``GET  /api/v1/nodes/{id}/desired``        that node  ``{"node_id", "revision", "target"}``
``POST /api/v1/nodes/{id}/report``         that node  204
``POST /api/v1/nodes/{id}/telemetry``      that node  ``{"accepted", "duplicates", "rejected"}``
``GET  /api/v1/telemetry?node=&kind=...``  admin      ``{"items": [stored item]}``
``GET|POST /api/v1/models``                admin      registry listing / publish (multipart: file,
                                                      manifest, optional profile/version/sha256)
``POST /api/v1/artifacts``, ``GET .../{sha}`` admin    a checkpoint's files by sha256
``POST /api/v1/benchmarks``, ``GET .../{id}`` admin   a benchmark job a node's agent runs
``POST /api/v1/deployments``               admin      the new rollout
``GET  /api/v1/rollouts[/{id}]``           admin      rollouts / rollout
``POST /api/v1/rollouts/{id}/rollback``    admin      rollout (``{"to": "name:version"?}``)
``POST /api/v1/rollouts/{id}/pause|resume`` admin     rollout
``GET  /tuf/metadata/{file}``              none       signed metadata
``GET  /tuf/targets/{dir}/{sha}.{name}``   node/admin target bytes (deployments: that node only)
``GET  /api/v1/openapi.json``              admin      the OpenAPI document (control/openapi.py)
``GET  /api/v1/monitoring|alerts``         admin      fleet monitoring (control/monitoring_api)
``POST /api/v1/datasets/captures``         admin      captures -> data set (control/captures_api)
``GET|POST /api/v1/jobs[/{id}[/cancel]]``  admin      retraining jobs (control/jobs_api)
``GET  /metrics``                          admin      fleet gauges, Prometheus text
``GET|POST /ui/...``                       session    the dashboard (control/ui, docs/ui.md)
=========================================  =========  ========================================

Blocking work (database, hashing) runs in Starlette's thread pool. Every EdgeError becomes an
answer in one place (:mod:`edgeloop.control.answers`). In front of the routes: the per-source
limit on wrong credentials (:mod:`edgeloop.control.throttle`) and each route's body cap
(:mod:`edgeloop.control.limits`); bodies are parsed with strict schemas
(:mod:`edgeloop.control.schemas`). The core routes and the credential checks live on
:class:`~edgeloop.control.api.Api`, the model registry's in :mod:`edgeloop.control.models_api`,
each other group in its ``*_api`` module; this module lists them in match order and assembles
the app.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from edgeloop import __version__
from edgeloop.control import answers, ui
from edgeloop.control.alerting import Alerting
from edgeloop.control.api import Api, Endpoint
from edgeloop.control.artifacts_api import ArtifactRoutes
from edgeloop.control.bench_api import BenchRoutes
from edgeloop.control.captures_api import CaptureRoutes
from edgeloop.control.experiments_api import ExperimentRoutes
from edgeloop.control.fl_api import FlRoutes
from edgeloop.control.fleet_metrics import FleetMetrics
from edgeloop.control.jobs_api import JobRoutes
from edgeloop.control.limits import Body, BodyLimits, Route, RouteBodies, WireLimits
from edgeloop.control.loop import check_settings, run_loop
from edgeloop.control.models_api import ModelRoutes
from edgeloop.control.monitoring_api import MonitoringRoutes
from edgeloop.control.plane import ControlPlane
from edgeloop.control.throttle import FailureLimit, Throttled
from edgeloop.control.train_api import TrainRoutes
from edgeloop.core.errors import EdgeError

__all__ = ["Api", "Endpoint", "create_app"]  # Api and Endpoint live in control/api.py


def create_app(
    plane: ControlPlane,
    *,
    tick_s: float | None = 1.0,
    limits: WireLimits | None = None,
    failures: FailureLimit | None = None,
    alerting: Alerting | None = None,
) -> FastAPI:
    """The control plane's ASGI app. ``tick_s``: the rollout loop's period (None: no loop;
    callers tick with ``plane.tick_all()``, as the app-level tests do). ``limits``: each
    route's body cap and deadline (:mod:`edgeloop.control.limits`). ``failures``: the
    per-source limit on wrong credentials (:mod:`edgeloop.control.throttle`; ``app.state``
    holds it).

    Raises:
        ConfigError: the TUF timestamp would be served too close to its expiry at this tick
            (:func:`edgeloop.control.loop.check_settings`).
    """
    if tick_s is not None:
        check_settings(plane.repo.expiry.timestamp_s, tick_s)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loop = run_loop(plane, tick_s, alerting) if tick_s is not None else None
        task = asyncio.create_task(loop) if loop is not None else None
        sender = alerting.start() if alerting is not None else None
        sending = asyncio.create_task(sender.run()) if sender is not None else None
        try:
            yield
        finally:
            if sending is not None:
                sending.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sending
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    app = FastAPI(
        title="edgeloop control",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )
    api = Api(plane)
    app.state.api = api
    v1 = "/api/v1"
    mon = MonitoringRoutes(api, FleetMetrics(plane, alerting))
    models = ModelRoutes(api)
    routes: list[tuple[str, Endpoint, str, Body]] = [
        # The agents' calls first: routes are matched in order, and these are nearly all calls.
        (f"{v1}/nodes/{{node_id}}/desired", api.desired, "GET", Body.NONE),
        (f"{v1}/nodes/{{node_id}}/report", api.report, "POST", Body.REPORT),
        (f"{v1}/nodes/{{node_id}}/telemetry", api.telemetry_post, "POST", Body.TELEMETRY),
        ("/healthz", api.healthz, "GET", Body.NONE),
        (f"{v1}/enrollment-tokens", api.enrollment_token, "POST", Body.JSON),
        (f"{v1}/enroll", api.enroll, "POST", Body.SMALL),
        (f"{v1}/nodes", api.nodes, "GET", Body.NONE),
        (f"{v1}/nodes/{{node_id}}", api.node_get, "GET", Body.NONE),
        (f"{v1}/nodes/{{node_id}}", api.node_patch, "PATCH", Body.JSON),
        (f"{v1}/telemetry", api.telemetry_get, "GET", Body.NONE),
        (f"{v1}/models", models.models, "GET", Body.NONE),
        (f"{v1}/models", models.publish_model, "POST", Body.MODEL),
        (f"{v1}/deployments", api.deploy, "POST", Body.JSON),
        (f"{v1}/rollouts", api.rollouts, "GET", Body.NONE),
        (f"{v1}/rollouts/{{rid}}", api.rollout_get, "GET", Body.NONE),
        (f"{v1}/rollouts/{{rid}}/rollback", api.rollback, "POST", Body.JSON),
        (f"{v1}/rollouts/{{rid}}/pause", api.pause, "POST", Body.SMALL),
        (f"{v1}/rollouts/{{rid}}/resume", api.resume, "POST", Body.SMALL),
        ("/tuf/metadata/{file}", api.tuf_metadata, "GET", Body.NONE),
        ("/tuf/targets/{path:path}", api.tuf_target, "GET", Body.NONE),
        (f"{v1}/openapi.json", api.openapi, "GET", Body.NONE),
        (f"{v1}/monitoring", mon.monitoring, "GET", Body.NONE),
        (f"{v1}/alerts", mon.alerts, "GET", Body.NONE),
        ("/metrics", mon.prometheus, "GET", Body.NONE),
        (f"{v1}/datasets/captures", CaptureRoutes(api).make_dataset, "POST", Body.JSON),
        *ExperimentRoutes(api).routes(),  # fleet A/B experiments (control/experiments_api.py)
        *FlRoutes(api).routes(),  # federated learning (control/fl_api.py)
        *JobRoutes(api).routes(),  # retraining jobs (control/jobs_api.py)
        *ArtifactRoutes(api).routes(),  # checkpoints by sha256 (control/artifacts_api.py)
        *BenchRoutes(api).routes(),  # benchmarks run on a node (control/bench_api.py)
        *TrainRoutes(api).routes(),  # incremental training on a node (control/train_api.py)
    ]
    api.routes = [(method, path) for path, _, method, _ in routes]
    bodies: list[Route] = []
    for path, endpoint, method, kind in routes:
        app.router.add_route(path, endpoint, methods=[method], include_in_schema=False)
        bodies.append((app.router.routes[-1].path_regex, method, kind))  # type: ignore[attr-defined]
    bodies += ui.mount(app, plane)  # the dashboard at /ui (control/ui, docs/ui.md)
    # Inside the error middleware, outside the exception handlers: a cap tripped while an
    # endpoint reads its body is answered by _edge_error like any EdgeError. The server's
    # protocol reads each body's deadline from app.state.bodies.
    app.state.bodies = RouteBodies(bodies, limits or WireLimits())
    app.add_middleware(BodyLimits, bodies=app.state.bodies)
    app.state.failures = failures or FailureLimit.from_env()
    app.add_middleware(Throttled, limit=app.state.failures)  # outermost: before any credential
    app.add_exception_handler(EdgeError, answers.edge_error)
    app.add_exception_handler(HTTPException, answers.http_error)
    app.add_exception_handler(ClientDisconnect, answers.gone)
    app.add_exception_handler(Exception, answers.unexpected)
    return app
