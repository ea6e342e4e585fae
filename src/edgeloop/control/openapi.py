"""The control plane's OpenAPI 3.1 document: every route, its body, its answers and its errors.

Served at ``GET /api/v1/openapi.json`` behind the admin token (it lists the API, which is the
admin's to know). The request bodies are the schemas the routes parse with
(:mod:`edgeloop.control.schemas`); the answers are described by the models below, which the
routes do not use at run time (they answer with plain dicts on the agents' hot path).
:func:`document` refuses a route that has no entry in :data:`ROUTES`, so a new route cannot go
undocumented.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from edgeloop.control import schemas
from edgeloop.control.captures_api import CaptureDatasetBody
from edgeloop.control.fl_task_body import TaskBody
from edgeloop.core.errors import ConfigError


class Error(BaseModel):
    error: str
    type: str
    hint: str | None = None


class Health(BaseModel):
    status: str
    version: str


class TokenAnswer(BaseModel):
    token: str
    expires_at: str


class TufInfo(BaseModel):
    metadata_url: str
    targets_url: str
    root: dict[str, Any]


class EnrollAnswer(BaseModel):
    node_id: str
    node_token: str
    tuf: TufInfo


class Node(BaseModel):
    node_id: str
    name: str
    labels: dict[str, str]
    tier: int | None
    parent: str | None
    device_class: str
    capabilities: dict[str, Any]
    agent_url: str | None
    enrolled_at: str | None
    last_seen: str | None
    reported: dict[str, Any] | None
    desired_revision: int


class Nodes(BaseModel):
    nodes: list[Node]


class DesiredAnswer(BaseModel):
    node_id: str
    revision: int
    target: str


class Rejected(BaseModel):
    id: Any
    reason: str


class TelemetryAnswer(BaseModel):
    accepted: int
    duplicates: int
    rejected: list[Rejected]


class TelemetryItemIn(BaseModel):
    id: str
    kind: str
    created_at: str
    content_type: str = "application/json"
    payload: Any


class TelemetryBatch(BaseModel):
    items: list[TelemetryItemIn]


class TelemetryItem(TelemetryItemIn):
    node_id: str
    received_at: str | None
    model: str | None
    model_version: str | None
    unreadable: str | None = None


class TelemetryItems(BaseModel):
    items: list[TelemetryItem]


class ModelRow(BaseModel):
    name: str
    version: int
    ref: str
    sha256: str
    size_bytes: int
    format: str
    created_at: str
    manifest: dict[str, Any]


class Models(BaseModel):
    models: list[ModelRow]


class Rollout(BaseModel):
    rollout_id: str
    name: str
    model: str
    state: str
    wave: int | None
    waves: list[list[str]]
    spec: dict[str, Any]
    nodes: dict[str, dict[str, Any]]
    events: list[dict[str, Any]]
    created_at: str | None
    updated_at: str | None


class Rollouts(BaseModel):
    rollouts: list[Rollout]


@dataclass(frozen=True, slots=True)
class Doc:
    """One route: what it does, who may call it, its body and its answer."""

    summary: str
    auth: str  # "admin", "node", "node-or-admin", "any", "enroll-token", "none"
    answer: type[BaseModel] | None = None  # None: no JSON body (204, bytes)
    status: int = 200
    body: type[BaseModel] | None = None
    media: str = "application/json"
    raw_body: bool = False  # the body is bytes of ``media`` (a federated update)


class MonitoringRow(BaseModel):
    node_id: str
    model: str
    version: str
    drifting: bool | None
    drift_ratio: dict[str, float] | None
    monitor_state: str | None
    samples_seen: int | None
    alarms: dict[str, int] | None
    quality: dict[str, Any] | None
    labelled: int | None
    windowed_accuracy: float | None
    estimated_accuracy: float | None
    latency_ms: dict[str, float | None]
    requests: int | None
    errors: int | None
    error_rate: float | None
    window_s: float | None
    last_event: dict[str, Any] | None
    metrics_at: str | None
    last_seen: str | None
    received_at: str | None


class MonitoringRows(BaseModel):
    rows: list[MonitoringRow]


class AlertDoc(BaseModel):
    id: str
    rule: str
    kind: Literal["drifting_nodes", "accuracy_floor", "node_silent"]
    subject: str
    state: Literal["firing", "resolved"]
    first_seen: str
    last_seen: str
    resolved_at: str | None
    figures: dict[str, Any]


class Alerts(BaseModel):
    alerts: list[AlertDoc]


V1 = "/api/v1"
ROUTES: dict[tuple[str, str], Doc] = {
    ("GET", f"{V1}/nodes/{{node_id}}/desired"): Doc(
        "A node's desired revision (ETag; If-None-Match equal: 304)", "node-or-admin",
        DesiredAnswer),
    ("POST", f"{V1}/nodes/{{node_id}}/report"): Doc(
        "The node's reported state", "node", None, 204, schemas.ReportBody),
    ("POST", f"{V1}/nodes/{{node_id}}/telemetry"): Doc(
        "A batch of telemetry items (de-duplicated by id)", "node", TelemetryAnswer, 200,
        TelemetryBatch),
    ("GET", "/healthz"): Doc("Liveness", "none", Health),
    ("POST", f"{V1}/enrollment-tokens"): Doc(
        "A one-use enrollment token", "admin", TokenAnswer, 201, schemas.EnrollmentTokenBody),
    ("POST", f"{V1}/enroll"): Doc(
        "Trade an enrollment token for a node id, a node token and the TUF root",
        "enroll-token", EnrollAnswer, 201, schemas.EnrollBody),
    ("GET", f"{V1}/nodes"): Doc("Every enrolled node", "admin", Nodes),
    ("GET", f"{V1}/nodes/{{node_id}}"): Doc("One node", "admin", Node),
    ("PATCH", f"{V1}/nodes/{{node_id}}"): Doc(
        "Change a node's labels, tier or parent", "admin", Node, 200, schemas.NodePatchBody),
    ("GET", f"{V1}/telemetry"): Doc(
        "Stored telemetry (query: node, model, version, kind, since, until, limit)", "admin",
        TelemetryItems),
    ("GET", f"{V1}/models"): Doc("The registry's model versions", "admin", Models),
    ("POST", f"{V1}/models"): Doc(
        "Publish a model (multipart: file + manifest JSON; optional profile file, version "
        "and sha256; 200 when that version already holds these bytes)", "admin", None, 201, None,
        "multipart/form-data"),
    ("POST", f"{V1}/deployments"): Doc(
        "Deploy: a new staged rollout (409 when it would replace a model whose inputs or "
        "outputs differ, unless force_spec_change)", "admin", Rollout, 201,
        schemas.DeploymentBody),
    ("GET", f"{V1}/rollouts"): Doc("Every rollout", "admin", Rollouts),
    ("GET", f"{V1}/rollouts/{{rid}}"): Doc("One rollout", "admin", Rollout),
    ("POST", f"{V1}/rollouts/{{rid}}/rollback"): Doc(
        "Roll a rollout back (to its previous models, or to 'to')", "admin", Rollout, 200,
        schemas.RollbackBody),
    ("POST", f"{V1}/rollouts/{{rid}}/pause"): Doc("Pause a rollout", "admin", Rollout),
    ("POST", f"{V1}/rollouts/{{rid}}/resume"): Doc("Resume a rollout", "admin", Rollout),
    ("GET", "/tuf/metadata/{file}"): Doc("Signed TUF metadata", "none", None, 200),
    ("GET", "/tuf/targets/{path}"): Doc(
        "A TUF target: an artifact (any credential) or a node's deployment document (that "
        "node); Range: bytes=N- resumes", "any", None, 200, None, "application/octet-stream"),
    ("GET", f"{V1}/openapi.json"): Doc("This document", "admin", None, 200),
    ("GET", f"{V1}/monitoring"): Doc(
        "Fleet monitoring per model version and node (query: model, version, node)", "admin",
        MonitoringRows),
    ("GET", f"{V1}/alerts"): Doc("Alerts, firing first (query: state)", "admin", Alerts),
    ("GET", "/metrics"): Doc(
        "Fleet gauges (Prometheus text format)", "admin", None, 200, None, "text/plain"),
    ("POST", f"{V1}/datasets/captures"): Doc(
        "Captured samples of a model (query in the body) as a new data set version "
        "(409: the name already holds them)", "admin", None, 201, CaptureDatasetBody),
    ("POST", f"{V1}/fl/tasks"): Doc(
        "A federated task (its initial model is built at once)", "admin", None, 201, TaskBody),
    ("GET", f"{V1}/fl/tasks"): Doc("Every federated task, summarised", "admin", None, 200),
    ("GET", f"{V1}/fl/tasks/{{tid}}"): Doc("A task's status and round history", "admin", None),
    ("POST", f"{V1}/fl/tasks/{{tid}}/stop"): Doc("Stop a task", "admin", None, 200),
    ("GET", f"{V1}/fl/clients"): Doc("The federated workers seen", "admin", None, 200),
    ("GET", f"{V1}/fl/nodes/{{node_id}}/assignment"): Doc(
        "The round a node works on (long poll; query: train, test, wait); 204: none", "node",
        None, 200),
    ("GET", f"{V1}/fl/tasks/{{tid}}/rounds/{{r}}/model"): Doc(
        "A round's global model: float32 weights (X-Sha256)", "node-or-admin", None, 200, None,
        "application/octet-stream"),
    ("POST", f"{V1}/fl/tasks/{{tid}}/rounds/{{r}}/updates/{{node_id}}"): Doc(
        "A node's update: float32 weights, header X-Fl-Update {num_samples, metrics}", "node",
        None, 204, None, "application/octet-stream", raw_body=True),
}  # fmt: skip
ERRORS = {
    "400": "A malformed body or query: the message names each bad field",
    "401": "No credential, or a wrong one (WWW-Authenticate: Bearer)",
    "403": "A valid credential that does not cover this call",
    "404": "No such node, rollout, model or file",
    "408": "The request body did not arrive within the deadline",
    "409": "A conflict with the current state (a rollout in progress, a wrong state)",
    "413": "The body is over this route's cap (docs/control.md)",
    "422": "A body of the wrong shape (telemetry) or a model that does not verify",
    "429": "Too many wrong credentials from this source (Retry-After)",
    "503": "The database is unavailable (Retry-After)",
}


def document(routes: list[tuple[str, str]], version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``routes`` (``(method, path)`` as the app serves them).

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
        path = re.sub(r"\{(\w+):\w+\}", r"{\1}", path)  # {path:path}, {r:int}: no converter
        doc = ROUTES.get((method, path))
        if doc is None:
            raise ConfigError(f"{method} {path} has no OpenAPI entry", hint="add it to ROUTES")
        paths.setdefault(path, {})[method.lower()] = _operation(path, doc, ref)
    return {
        "openapi": "3.1.0",
        "info": {"title": "edgeloop control plane", "version": version},
        "paths": paths,
        "components": {
            "schemas": defs.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _operation(path: str, doc: Doc, ref: dict[type[BaseModel], Any]) -> dict[str, Any]:
    error = {"application/json": {"schema": ref[Error]}}
    answer: dict[str, Any] = {"description": doc.summary}
    if doc.answer is not None:
        answer["content"] = {doc.media: {"schema": ref[doc.answer]}}
    elif doc.status == 200:  # bytes of their own media type: TUF JSON, metrics text, targets
        answer["content"] = {doc.media: {"schema": {}}}
    op: dict[str, Any] = {
        "summary": doc.summary,
        "description": f"Credential: {doc.auth}.",
        "responses": {str(doc.status): answer}
        | {code: {"description": text, "content": error} for code, text in ERRORS.items()},
    }
    if doc.auth not in ("none", "enroll-token"):
        op["security"] = [{"bearer": []}]
    params = [part[1:-1] for part in path.split("/") if part.startswith("{")]
    if params:
        op["parameters"] = [{"name": name, "in": "path", "required": True,
                             "schema": {"type": "string"}} for name in params]  # fmt: skip
    if doc.body is not None:
        content = {"application/json": {"schema": ref[doc.body]}}
        op["requestBody"] = {"required": True, "content": content}
    elif doc.raw_body:
        raw = {"schema": {"type": "string", "format": "binary"}}
        op["requestBody"] = {"required": True, "content": {doc.media: raw}}
    elif doc.media == "multipart/form-data":
        form = {"type": "object", "required": ["file", "manifest"],
                "properties": {"file": {"type": "string", "format": "binary"},
                               "manifest": {"type": "string"},
                               "profile": {"type": "string", "format": "binary"},
                               "version": {"type": "string", "pattern": schemas.VERSION},
                               "sha256": {"type": "string", "pattern": schemas.SHA256}},
                "additionalProperties": False}  # fmt: skip
        op["requestBody"] = {"required": True, "content": {doc.media: {"schema": form}}}
    return op
