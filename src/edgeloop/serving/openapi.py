"""The inference server's OpenAPI 3.1 document: every route, its body, its answers and errors.

Served at ``GET /openapi.json`` by ``edgeloop serve`` and by the edge agent's server. It is
behind the same credential as the server's state-changing routes where there is one: with
``EDGELOOP_SERVE_ADMIN_TOKEN`` set, ``Authorization: Bearer <token>`` (401 without, 403 wrong);
on an open server and on the agent (whose server has no credential: its changing routes are
closed, :mod:`edgeloop.serving.admin`) it is as open as the inference routes it describes.

The bodies and answers are the models of :mod:`edgeloop.serving.schemas`. :func:`document`
refuses a route the app serves that has no entry in :data:`ROUTES`, so a new route cannot go
undocumented (``tests/serving/test_openapi.py`` compares the document with the route table).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from edgeloop import __version__
from edgeloop.core.errors import ConfigError, EdgeError
from edgeloop.serving.errors import error_response
from edgeloop.serving.oip import HEADER
from edgeloop.serving.schemas import (
    AnyJson,
    Error,
    Health,
    IndexEntry,
    InferRequest,
    InferResponse,
    LabelAnswer,
    Labels,
    Live,
    ModelMetadata,
    ModelReady,
    Monitor,
    Policy,
    PowerBudget,
    PredictAnswer,
    PredictRequest,
    Ready,
    ServerMetadata,
    SwapReport,
)

PATH = "/openapi.json"


@dataclass(frozen=True, slots=True)
class Doc:
    """One route: what it does, its answer, its body and the error statuses it can answer."""

    summary: str
    answer: type[BaseModel] | None  # None: not JSON (see media)
    errors: tuple[int, ...] = ()
    body: type[BaseModel] | None = None
    media: str = "application/json"
    admin: bool = False  # behind the admin gate (serving/admin.py)
    refused_with: int | None = None  # the status of a 'not ready' answer (OIP: 400; /health 503)


INFER = Doc(
    "Inference (JSON, or binary tensors after Inference-Header-Content-Length bytes of JSON)",
    InferResponse,
    (400, 404, 409, 413, 422, 429, 503, 504),
    InferRequest,
)
PREDICT = Doc(
    "One sample in, prediction and confidence out",
    PredictAnswer,
    (400, 404, 409, 413, 422, 429, 503, 504),
    PredictRequest,
)
LABELS = Doc(
    "Ground truth for answered requests, joined by request id",
    LabelAnswer,
    (400, 404, 409, 413),
    Labels,
)
METADATA = Doc("Model metadata: inputs, outputs, versions, variants", ModelMetadata, (404, 503))
READY = Doc(
    "Whether the model (version) is ready (400 when not)",
    ModelReady,
    (404,),
    None,
    refused_with=400,
)
MONITOR = Doc("The drift monitor's state and the labels' outcomes", Monitor, (404, 503))
SWAP = (401, 403, 404, 409, 422)
M = "/v2/models/{model}"
V = "/v2/models/{model}/versions/{version}"
ROUTES: dict[tuple[str, str], Doc] = {
    ("POST", f"{M}/infer"): INFER,
    ("POST", f"{V}/infer"): INFER,
    ("POST", "/predict"): PREDICT,
    ("POST", "/predict/{model}"): PREDICT,
    ("POST", "/predict/labels"): LABELS,
    ("POST", f"{M}/labels"): LABELS,
    ("POST", "/predict/{model}/labels"): LABELS,
    ("GET", "/v2"): Doc("Server metadata (model_repository only where load/unload are offered)",
                        ServerMetadata),
    ("GET", "/v2/health/live"): Doc("Liveness", Live),
    ("GET", "/v2/health/ready"): Doc("Readiness (400 until every model is loaded)", Ready,
                                     refused_with=400),
    ("GET", M): METADATA,
    ("GET", V): METADATA,
    ("GET", f"{M}/ready"): READY,
    ("GET", f"{V}/ready"): READY,
    ("GET", f"{M}/policy"): Doc("The variant policy, power figures and cascade", Policy, (404,)),
    ("GET", f"{M}/monitor"): MONITOR,
    ("GET", f"{V}/monitor"): MONITOR,
    ("PUT", f"{M}/power-budget"): Doc("A new power budget for the model", Policy,
                                      (400, 401, 403, 404, 409, 413), PowerBudget, admin=True),
    ("POST", "/v2/repository/index"): Doc("Every model version and its state", IndexEntry),
    ("POST", "/v2/repository/models/{model}/load"): Doc(
        "Hot swap: rescan the model's files, load new versions, then switch", SwapReport, SWAP,
        admin=True),
    ("POST", "/v2/repository/models/{model}/unload"): Doc(
        "Stop serving every version of the model", SwapReport, SWAP, admin=True),
    ("GET", "/health"): Doc("Status and the models loaded (503 until ready)", Health,
                            refused_with=503),
    ("GET", "/metrics"): Doc("Prometheus text format", None, media="text/plain"),
    ("GET", PATH): Doc("This document", AnyJson, (401, 403)),
    # Routes the edge agent adds to its server (edgeloop.agent.process).
    ("GET", "/agent/status"): Doc("The agent's state: updater, slots, reports, telemetry",
                                  AnyJson),
    ("GET", "/tier/targets/{path}"): Doc(
        "A tier parent's cached TUF target, for a child's node token (Authorization: Bearer)",
        None, (400, 401, 403, 404, 502, 503), media="application/octet-stream"),
}  # fmt: skip
LIST_ANSWERS = {("POST", "/v2/repository/index")}  # answered with a JSON list of the model
ERRORS = {
    400: "A malformed request: the message names the field",
    401: "No admin token (Authorization: Bearer $EDGELOOP_SERVE_ADMIN_TOKEN)",
    403: "A wrong admin token, or a route this server does not offer (the edge agent)",
    404: "No such model, version, request id or route",
    405: "A path parameter holding '/' that lands on a route of another method",
    409: "A conflict with what is served (no power policy, no profile to join labels to)",
    413: "The body is over --max-body-mb, or too many labels",
    422: "Tensors that do not fit the model, or a model file that does not load",
    429: "Over capacity: the queue is full or the request waited past its budget (Retry-After)",
    502: "The parent node did not answer",
    503: "Not ready: loading, draining, or the model has no ready version (Retry-After)",
    504: "The request did not finish within the per-request timeout",
}
ALWAYS = (404, 405)  # a path parameter can always name nothing, or reach another route


def document(routes: list[tuple[str, str]], admin_mode: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``routes`` (``(method, path)`` as the app serves them);
    ``admin_mode`` is the :class:`~edgeloop.serving.admin.AdminGate`'s mode.

    Raises:
        ConfigError: a route has no entry in :data:`ROUTES` (document it there).
    """
    models = {m for d in ROUTES.values() for m in (d.body, d.answer) if m is not None}
    mode: Literal["validation"] = "validation"
    keyed = [(m, mode) for m in sorted(models | {Error}, key=lambda m: m.__name__)]
    refs, defs = models_json_schema(keyed, ref_template="#/components/schemas/{model}")
    ref = {model: refs[(model, "validation")] for model, _ in keyed}
    paths: dict[str, dict[str, Any]] = {}
    for method, path in routes:
        doc = ROUTES.get((method, path))
        if doc is None:
            raise ConfigError(f"{method} {path} has no OpenAPI entry", hint="add it to ROUTES")
        op = _operation(path, doc, ref, admin_mode, (method, path) in LIST_ANSWERS)
        paths.setdefault(path, {})[method.lower()] = op
    schemes = {"bearer": {"type": "http", "scheme": "bearer"}} if admin_mode == "token" else {}
    return {
        "openapi": "3.1.0",
        "info": {"title": "edgeloop inference server", "version": __version__,
                 "description": f"Open Inference Protocol v2 and /predict; admin: {admin_mode}"},
        "paths": paths,
        "components": {"schemas": defs.get("$defs", {}), "securitySchemes": schemes},
    }  # fmt: skip


def _operation(
    path: str, doc: Doc, ref: dict[type[BaseModel], Any], admin_mode: str, listed: bool
) -> dict[str, Any]:
    error = {"application/json": {"schema": ref[Error]}}
    answer: dict[str, Any] = {"description": doc.summary}
    if doc.answer is not None:
        schema = {"type": "array", "items": ref[doc.answer]} if listed else ref[doc.answer]
        answer["content"] = {doc.media: {"schema": schema}}
        if doc.body is InferRequest:  # binary outputs: JSON, then the tensors' bytes
            answer["content"]["application/octet-stream"] = {"schema": {}}
    else:
        answer["content"] = {doc.media: {"schema": {"type": "string"}}}
    codes = set(doc.errors) | set(ALWAYS)
    gated = doc.admin or path == PATH
    if admin_mode == "token" and gated:
        codes |= {401, 403}
    elif admin_mode == "closed" and doc.admin:
        codes = {403, *ALWAYS}  # the agent offers none of them: never a 200
    else:
        codes -= {401, 403} if gated else set()
    closed = admin_mode == "closed" and doc.admin
    responses: dict[str, Any] = {} if closed else {"200": answer}
    if doc.refused_with is not None:  # not ready: the same body, another status
        responses[str(doc.refused_with)] = answer
    for code in sorted(codes):
        responses.setdefault(str(code), {"description": ERRORS[code], "content": error})
    op: dict[str, Any] = {"summary": doc.summary, "responses": responses}
    if admin_mode == "token" and gated:
        op["security"] = [{"bearer": []}]
    params = [part[1:-1] for part in path.split("/") if part.startswith("{")]
    op["parameters"] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
        for name in params
    ]
    if doc.body is InferRequest:
        op["parameters"].append(
            {
                "name": HEADER,
                "in": "header",
                "required": False,
                "schema": {"type": "string", "pattern": "^[0-9]{1,12}$"},
            }
        )
    if doc.body is not None:
        content: dict[str, Any] = {"application/json": {"schema": ref[doc.body]}}
        if doc.body is InferRequest:
            content["application/octet-stream"] = {"schema": {"type": "string", "format": "binary"}}
        op["requestBody"] = {"required": True, "content": content}
    return op  # fmt: skip


def served_routes(routes: list[BaseRoute]) -> list[tuple[str, str]]:
    """``(method, path)`` of every route in an app's route table (HEAD left out)."""
    return [
        (method, route.path.replace("{path:path}", "{path}"))
        for route in routes
        for method in sorted(getattr(route, "methods", None) or ())
        if method != "HEAD" and hasattr(route, "path")
    ]


async def serve(request: Request) -> Response:
    """``GET /openapi.json``: the document of the app this request reached."""
    admin = request.app.state.server.admin
    try:
        if admin.mode == "token":
            admin.check(request, f"GET {PATH}")
        doc = document(served_routes(request.app.router.routes), admin.mode)
    except EdgeError as exc:
        return error_response(exc)
    return Response(orjson.dumps(doc), media_type="application/json")
