"""The HTTP edge: Open Inference Protocol v2 routes, ``/predict``, ``/health``, ``/metrics``.

Routes (KServe's V2 REST protocol, Triton's repository extension, and the simple API):

====================================================  ============================================
``GET  /v2``                                          server metadata
``GET  /v2/health/live``, ``/v2/health/ready``        200, or 400 when not ready (the spec's 4xx)
``GET  /v2/models/{m}[/versions/{v}]``                model metadata
``GET  /v2/models/{m}[/versions/{v}]/ready``          200, or 400 when not ready
``POST /v2/models/{m}[/versions/{v}]/infer``          inference, JSON or binary tensors
``POST /v2/repository/index``                         every model version and its state
``POST /v2/repository/models/{m}/load``               hot swap: rescan ``m``'s files, switch
``POST /v2/repository/models/{m}/unload``             stop serving ``m``
``GET  /v2/models/{m}/policy``                        the variant policy, power figures, cascade
``POST /v2/models/{m}/labels``, ``/predict/labels``   ground truth for answered requests
``GET  /v2/models/{m}[/versions/{v}]/monitor``        the drift monitor's state (feedback.py)
``PUT  /v2/models/{m}/power-budget``                  ``{"watts": W}``: a new power budget
``POST /predict``, ``POST /predict/{m}``              one sample in, prediction + confidence out
``GET  /health``                                      status, models loaded (503 until ready)
``GET  /metrics``                                     Prometheus text format
``GET  /openapi.json``                                this API's OpenAPI document (openapi.py)
====================================================  ============================================

Hot paths are plain Starlette routes (no FastAPI parameter parsing: a request is decoded once,
by :mod:`edgeloop.serving.oip`). Every :class:`EdgeError` becomes an answer in one place,
:func:`edgeloop.serving.errors.error_response`; an unversioned request is routed by the
model's A/B split, keyed by the ``X-Request-Key`` header when present. The three routes that
change what is served (load, unload, power-budget) pass :class:`AdminGate` first: open, token
or closed (the edge agent closes them; see :mod:`edgeloop.serving.admin`). A bug (an exception
that is not an EdgeError) is answered 500 in JSON and counted like any other answer.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from edgeloop import __version__
from edgeloop.core.errors import EdgeError
from edgeloop.serving import front, oip, openapi, policy, predict
from edgeloop.serving.admin import AdminGate
from edgeloop.serving.admission import QueueDelayError
from edgeloop.serving.body import read_body
from edgeloop.serving.cascade import CascadeSpec
from edgeloop.serving.catalog import Catalog
from edgeloop.serving.errors import (
    BadRequestError,
    edge_error_handler,
    error_response,
    http_error_handler,
    internal_response,
)
from edgeloop.serving.feedback import Feedback
from edgeloop.serving.metrics import CONTENT_TYPE, UNKNOWN, RuntimeCollector, ServerMetrics
from edgeloop.serving.monitor_metrics import MonitorCollector
from edgeloop.serving.served import ServedVersion, VersionState
from edgeloop.serving.service import Answer, InferenceService, Ticket
from edgeloop.serving.validation import check_inputs, check_outputs

log = logging.getLogger(__name__)
KEY_HEADER = "x-request-key"
EXTENSIONS = ["binary_tensor_data", "model_repository"]
_REJECT_REASONS = {413: "body_too_large", 429: "queue_full", 503: "not_ready", 504: "timeout"}


def _json(doc: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(doc), status_code=status, media_type="application/json")


class Server:
    """The routes' state: the catalog, the inference service and the metrics."""

    def __init__(
        self,
        catalog: Catalog,
        metrics: ServerMetrics | None = None,
        admin: AdminGate | None = None,
    ) -> None:
        self.catalog = catalog
        self.admin = admin if admin is not None else AdminGate()
        self.config = catalog.config
        self.metrics = metrics if metrics is not None else ServerMetrics()
        self.metrics.registry.register(RuntimeCollector(catalog.figures))
        self.service = InferenceService(catalog, self.metrics)
        self.feedback = Feedback(catalog, self.service.joins, self.config)
        self.feedback.label_sinks.append(self.service.capture.label)  # labels of captures
        self.metrics.registry.register(MonitorCollector(catalog.watches, self.feedback.counts))

    async def counted(self, ticket: Ticket, work: Callable[[], Awaitable[Response]]) -> Response:
        """Run ``work``, answer its EdgeError (or a bug's 500), and count the request exactly
        once, whatever its status: ``edgeloop_requests_total`` holds every 5xx too."""
        try:
            response = await work()
        except EdgeError as exc:
            self.metrics.failed(ticket.model, ticket.version, type(exc).__name__)
            delayed = isinstance(exc, QueueDelayError)
            reason = "queue_delay" if delayed else _REJECT_REASONS.get(exc.http_status)
            if reason is not None:
                self.metrics.rejected.labels(ticket.model, reason).inc()
            response = error_response(exc)
        except Exception as exc:  # a bug: answered 500 and counted like any other answer
            log.exception("%s request failed", ticket.endpoint)
            self.metrics.failed(ticket.model, ticket.version, "InternalError")
            response = internal_response(exc)
        self.metrics.observe(ticket.arm, ticket.endpoint, response.status_code, ticket.timing)
        return response

    # -- Open Inference Protocol ---------------------------------------------------------

    def door_refused(self, path: str, waited_s: float) -> None:
        """Count a request the front door refused (it waited past the queue delay budget)."""
        parts = path.split("/")  # /v2/models/{m}/..., /predict/{m} or /predict
        name = parts[3] if parts[1] == "v2" and len(parts) > 3 else ""
        if parts[1] == "predict":
            name = parts[2] if len(parts) > 2 else next(iter(self.catalog.models), "")
        model = name if name in self.catalog.models else UNKNOWN
        self.metrics.rejected.labels(model, "queue_delay").inc()
        endpoint = "predict" if parts[1] == "predict" else "infer"
        self.metrics.observe((model, "", "", "primary"), endpoint, 429, None)

    async def infer(self, request: Request) -> Response:
        ticket = Ticket("infer", started=front.arrived(request.scope))
        return await self.counted(ticket, lambda: self._infer(request, ticket))

    async def _infer(self, request: Request, ticket: Ticket) -> Response:
        name = request.path_params["model"]
        version = request.path_params.get("version")
        self.service.precheck(ticket, name)  # 404 / 429 before the body is even read
        body = await read_body(request, self.config.max_body_bytes)
        decoded = oip.decode_infer(body, request.headers.get(oip.HEADER))
        wanted: tuple[str, ...] = ()

        def make_feeds(served: ServedVersion) -> dict[str, Any]:
            nonlocal wanted
            wanted = check_outputs(served.where, decoded.outputs, served.outputs)
            return check_inputs(
                served.where,
                decoded.inputs,
                served.inputs,
                allow_nonfinite=self.config.allow_nonfinite,
            )

        rid = decoded.id if isinstance(decoded.id, str) and decoded.id else None
        answer = await self.service.infer(
            ticket, name, version, request.headers.get(KEY_HEADER), make_feeds, rid
        )
        outputs = {n: answer.result.outputs[n] for n in wanted}
        content, headers = oip.encode_infer(
            model_name=answer.model,
            model_version=answer.version,
            request=decoded,
            outputs=outputs,
            parameters=answer.cascade.to_dict() if answer.cascade else None,
        )
        return Response(content, headers=headers)

    async def server_metadata(self, request: Request) -> Response:
        closed = self.admin.mode == "closed"
        extensions = [e for e in EXTENSIONS if not (closed and e == "model_repository")]
        return _json({"name": "edgeloop", "version": __version__, "extensions": extensions})

    async def live(self, request: Request) -> Response:
        return _json({"live": True})

    async def ready(self, request: Request) -> Response:
        ready = self.catalog.ready
        return _json({"ready": ready}, 200 if ready else 400)

    async def model_metadata(self, request: Request) -> Response:
        return await self._guarded(lambda: self._metadata(request))

    async def _metadata(self, request: Request) -> Response:
        model = self.catalog.model(request.path_params["model"])
        version = request.path_params.get("version")
        served = model.version(version or model.latest or "")
        return _json(
            {
                "name": model.name,
                "versions": [version] if version else model.ready_versions,
                "platform": served.platform,
                "inputs": oip.tensor_metadata(served.inputs),
                "outputs": oip.tensor_metadata(served.outputs),
                "parameters": {
                    "variants": list(served.variants),
                    "variant": served.pick_variant(),
                    "inline": {n: v.inline for n, v in served.variants.items()},
                    "provider": served.provider,
                    "routing": model.routing.to_dict(),
                    "power": served.power.to_dict() if served.power else None,
                    "cascade": self._cascade_doc(model.name),
                },
            }
        )

    async def model_ready(self, request: Request) -> Response:
        return await self._guarded(lambda: self._model_ready(request))

    async def _model_ready(self, request: Request) -> Response:
        model = self.catalog.model(request.path_params["model"])
        version = request.path_params.get("version")
        if version is not None:
            served = model.versions.get(version)
            ok = served is not None and served.state is VersionState.READY
        else:
            ok = model.latest is not None
        return _json({"name": model.name, "ready": ok}, 200 if ok else 400)

    # -- adaptive inference: the policy and the power budget -------------------------------

    async def model_policy(self, request: Request) -> Response:
        name = request.path_params["model"]

        async def work() -> Response:
            return _json(policy.policy_doc(self.catalog, name, self._cascade(name)))

        return await self._guarded(work)

    async def power_budget(self, request: Request) -> Response:
        name = request.path_params["model"]

        async def work() -> Response:
            self.admin.check(request, f"PUT /v2/models/{name[:80]}/power-budget")
            body = await read_body(request, self.config.max_body_bytes)
            policy.set_power_budget(self.catalog, name, body)
            return _json(policy.policy_doc(self.catalog, name, self._cascade(name)))

        return await self._guarded(work)

    def _cascade(self, name: str) -> CascadeSpec | None:
        return self.service.escalator.specs.get(name)

    def _cascade_doc(self, name: str) -> dict[str, Any] | None:
        spec = self._cascade(name)
        return spec.to_dict() if spec is not None else None

    # -- repository extension: the hot swap ----------------------------------------------

    async def index(self, request: Request) -> Response:
        return _json(self.catalog.describe())

    async def load(self, request: Request) -> Response:
        name = request.path_params["model"]

        async def work() -> Response:
            self.admin.check(request, f"POST /v2/repository/models/{name[:80]}/load")
            try:
                report = await self.catalog.reload(name)
            except EdgeError:
                self.metrics.swaps.labels(self._label(name), "failed").inc()
                raise
            self.metrics.swaps.labels(name, "swapped").inc()
            return _json(report.to_dict())

        return await self._guarded(work)

    async def unload(self, request: Request) -> Response:
        name = request.path_params["model"]

        async def work() -> Response:
            self.admin.check(request, f"POST /v2/repository/models/{name[:80]}/unload")
            return _json((await self.catalog.unload(name)).to_dict())

        return await self._guarded(work)

    # -- the simple API --------------------------------------------------------------------

    async def predict(self, request: Request) -> Response:
        ticket = Ticket("predict", started=front.arrived(request.scope))
        return await self.counted(ticket, lambda: self._predict(request, ticket))

    async def _predict(self, request: Request, ticket: Ticket) -> Response:
        named = request.path_params.get("model")
        if named or len(self.catalog.models) == 1:
            self.service.precheck(ticket, named or self._only_model())
        body = await read_body(request, self.config.max_body_bytes)
        parsed = predict.parse_predict(body)
        name = named or parsed.model or self._only_model()

        def make_feeds(served: ServedVersion) -> dict[str, Any]:
            return predict.feeds_for(
                served.where, parsed, served.inputs, self.config.allow_nonfinite
            )

        answer: Answer = await self.service.infer(
            ticket, name, None, request.headers.get(KEY_HEADER) or None, make_feeds,
            parsed.request_id,
        )  # fmt: skip
        r = answer.result
        extra = answer.cascade.to_dict() if answer.cascade else None
        return _json(
            predict.answer(parsed, answer.model, answer.version, r.variant, r.outputs, extra)
        )

    def _only_model(self) -> str:
        if len(self.catalog.models) == 1:
            return next(iter(self.catalog.models))
        raise BadRequestError(
            f"this server serves {len(self.catalog.models)} models "
            f"({', '.join(map(repr, self.catalog.models))}); name one",
            hint='POST /predict/{model}, or add "model": NAME to the body',
        )

    async def health(self, request: Request) -> Response:
        ready = self.catalog.ready
        models = [
            {"name": m.name, "version": m.latest, "loaded": m.latest is not None}
            for m in self.catalog.models.values()
        ]
        doc = {
            "status": "ok" if ready else ("stopping" if self.catalog.stopping else "loading"),
            "model_loaded": ready,
            "models": models,
            "process": {"pid": os.getpid(), "torch_imported": "torch" in sys.modules},
        }
        return _json(doc, 200 if ready else 503)

    async def labels(self, request: Request) -> Response:
        async def work() -> Response:
            body = await read_body(request, self.config.max_body_bytes)
            name = request.path_params.get("model")
            only = next(iter(self.catalog.models)) if len(self.catalog.models) == 1 else None
            return _json(self.feedback.apply(name, body, only))

        return await self._guarded(work)

    async def monitor(self, request: Request) -> Response:
        params = request.path_params

        async def work() -> Response:
            return _json(self.feedback.view(params["model"], params.get("version")))

        return await self._guarded(work)

    async def metrics_text(self, request: Request) -> Response:
        return Response(self.metrics.render(), media_type=CONTENT_TYPE)

    # -- helpers ---------------------------------------------------------------------------

    async def _guarded(self, work: Callable[[], Awaitable[Response]]) -> Response:
        try:
            return await work()
        except EdgeError as exc:
            return error_response(exc)
        except Exception as exc:  # a bug: a JSON 500 without a traceback
            log.exception("request failed")
            return internal_response(exc)

    def _label(self, name: str) -> str:
        return name if name in self.catalog.models else "_unknown"


def create_app(
    catalog: Catalog,
    metrics: ServerMetrics | None = None,
    *,
    manage: bool = False,
    admin: AdminGate | None = None,
) -> FastAPI:
    """The server's ASGI app over ``catalog``; ``admin`` gates the state-changing routes
    (:mod:`edgeloop.serving.admin`; None: open, the standalone server's default).

    With ``manage`` the app's lifespan starts the catalog and stops it (for an ASGI server or
    a test client that runs lifespan events); otherwise the caller does, as
    :mod:`edgeloop.serving.server` does to report load errors with their exit code.
    """
    server = Server(catalog, metrics, admin)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await catalog.start()
        try:
            yield
        finally:
            await server.service.drain()
            await catalog.stop()

    app = FastAPI(
        title="edgeloop serve",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan if manage else None,
        # Our metrics are Prometheus'; FastAPI's OpenTelemetry hook costs a check per request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.server = server
    routes: list[tuple[str, Callable[[Request], Awaitable[Response]], str]] = [
        # The inference routes first: the router tries routes in order.
        ("/v2/models/{model}/infer", server.infer, "POST"),
        ("/v2/models/{model}/versions/{version}/infer", server.infer, "POST"),
        ("/predict", server.predict, "POST"),
        ("/predict/labels", server.labels, "POST"),  # before /predict/{model}: not a model
        ("/predict/{model}", server.predict, "POST"),
        ("/v2", server.server_metadata, "GET"),
        ("/v2/health/live", server.live, "GET"),
        ("/v2/health/ready", server.ready, "GET"),
        ("/v2/models/{model}", server.model_metadata, "GET"),
        ("/v2/models/{model}/versions/{version}", server.model_metadata, "GET"),
        ("/v2/models/{model}/ready", server.model_ready, "GET"),
        ("/v2/models/{model}/versions/{version}/ready", server.model_ready, "GET"),
        ("/v2/models/{model}/policy", server.model_policy, "GET"),
        ("/v2/models/{model}/labels", server.labels, "POST"),
        ("/predict/{model}/labels", server.labels, "POST"),
        ("/v2/models/{model}/monitor", server.monitor, "GET"),
        ("/v2/models/{model}/versions/{version}/monitor", server.monitor, "GET"),
        ("/v2/models/{model}/power-budget", server.power_budget, "PUT"),
        ("/v2/repository/index", server.index, "POST"),
        ("/v2/repository/models/{model}/load", server.load, "POST"),
        ("/v2/repository/models/{model}/unload", server.unload, "POST"),
        ("/health", server.health, "GET"),
        ("/metrics", server.metrics_text, "GET"),
        (openapi.PATH, openapi.serve, "GET"),  # every route above, described
    ]
    for path, endpoint, method in routes:
        app.router.add_route(path, endpoint, methods=[method], include_in_schema=False)
    app.add_exception_handler(EdgeError, edge_error_handler)
    app.add_exception_handler(HTTPException, http_error_handler)
    # The first layer a request meets: one too old already is refused before routing; one
    # admitted goes straight to its handler.
    delay_s = catalog.config.max_queue_delay_ms / 1000.0
    app.add_middleware(
        front.FrontDoor,
        max_delay_s=delay_s,
        on_refuse=server.door_refused,
        route=front.inference_route(_asgi(server.infer), _asgi(server.predict)),
        delay=server.service.delay,
    )
    return app


def _asgi(endpoint: Callable[[Request], Awaitable[Response]]) -> front.ASGIApp:
    async def app(scope: front.Scope, receive: front.Receive, send: front.Send) -> None:
        response = await endpoint(Request(scope, receive))
        await response(scope, receive, send)

    return app
