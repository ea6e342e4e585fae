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
(:mod:`edgeloop.control.schemas`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, BinaryIO

import orjson
from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, Response

from edgeloop import __version__
from edgeloop.control import answers, auth, fleet, openapi, schemas, telemetry, ui
from edgeloop.control.alerting import Alerting
from edgeloop.control.answers import json_answer, ranged
from edgeloop.control.artifacts_api import ArtifactRoutes
from edgeloop.control.bench_api import BenchRoutes
from edgeloop.control.captures_api import CaptureRoutes
from edgeloop.control.deployments import DeploymentSpec
from edgeloop.control.experiments_api import ExperimentRoutes
from edgeloop.control.fl_api import FlRoutes
from edgeloop.control.fleet_metrics import FleetMetrics
from edgeloop.control.jobs_api import JobRoutes
from edgeloop.control.limits import Body, BodyLimits, Route, RouteBodies, WireLimits
from edgeloop.control.loop import check_settings, run_loop
from edgeloop.control.monitoring_api import MonitoringRoutes
from edgeloop.control.plane import ControlPlane
from edgeloop.control.schemas import parse
from edgeloop.control.throttle import FailureLimit, Throttled
from edgeloop.control.train_api import TrainRoutes
from edgeloop.core.errors import (
    ConflictError,
    DataError,
    EdgeError,
    NotFoundError,
    UntrustedArtifactError,
)
from edgeloop.core.types import Manifest, ModelRef
from edgeloop.serving.errors import BadRequestError, PayloadTooLargeError

Endpoint = Callable[[Request], Awaitable[Response]]


class Api:
    """The routes' state: one control plane."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        self.routes: list[tuple[str, str]] = []  # (method, path) served: the OpenAPI document

    # --- credentials -------------------------------------------------------------------------

    async def admin(self, request: Request) -> None:
        token = auth.bearer(request.headers.get("authorization"))
        if auth.same(token, self.plane.admin_hash):
            return
        if await run_in_threadpool(fleet.node_of_token, self.plane.db, token) is not None:
            raise auth.ForbiddenError(
                f"{request.url.path} is an admin call; a node token does not cover it",
                hint="use the admin token (HOME/control/admin.token)",
            )
        raise auth.UnauthorizedError("the token is not valid", hint="check the admin token")

    async def node(self, request: Request, node_id: str, *, admin_ok: bool = False) -> str | None:
        """The calling node (None: the admin, when ``admin_ok``)."""
        return (await self.node_revision(request, node_id, admin_ok=admin_ok))[0]

    async def node_revision(
        self, request: Request, node_id: str, *, admin_ok: bool = False
    ) -> tuple[str | None, int | None]:
        """The calling node (None: the admin, when ``admin_ok``) and, for a node, its desired
        revision: the credential check and the poll's answer are one indexed read."""
        token = auth.bearer(request.headers.get("authorization"))
        reads, _ = self.plane.hot
        found = await reads.credential(token)
        owner = None if found is None else found[0]
        if owner is None:
            if auth.same(token, self.plane.admin_hash):
                if admin_ok:
                    return None, None
                raise auth.ForbiddenError(
                    f"{request.url.path} is a node's own call; the admin token does not cover it"
                )
            raise auth.UnauthorizedError("the token is not valid", hint="enroll the node again")
        if owner != node_id:
            raise auth.ForbiddenError(
                f"node {owner} may not act as node {node_id}",
                hint="a node reads only its own desired state and writes only its own reports",
            )
        return found if found is not None else (None, None)

    # --- routes ------------------------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        return json_answer({"status": "ok", "version": __version__})

    async def openapi(self, request: Request) -> Response:
        await self.admin(request)
        return json_answer(openapi.document(self.routes, __version__))

    async def enrollment_token(self, request: Request) -> Response:
        await self.admin(request)
        body = parse(schemas.EnrollmentTokenBody, await request.body())
        grant = auth.Enrollment(fleet.check_labels(body.labels or {}), body.tier, body.parent)
        token, expires = await run_in_threadpool(
            auth.create_enrollment_token, self.plane.db, grant, body.ttl_s
        )
        return json_answer({"token": token, "expires_at": fleet.iso(expires)}, 201)

    async def enroll(self, request: Request) -> Response:
        body = parse(schemas.EnrollBody, await request.body())
        if body.enrollment_token is None:
            raise auth.UnauthorizedError(
                "the body carries no enrollment_token",
                hint="ask the admin for one: POST /api/v1/enrollment-tokens",
            )
        node_id, node_token = await run_in_threadpool(
            fleet.enroll,
            self.plane.db,
            body.enrollment_token,
            body.name,
            body.capabilities or {},
            body.agent_url,
        )
        base = str(request.base_url).rstrip("/")
        tuf = {
            "metadata_url": f"{base}/tuf/metadata/",
            "targets_url": f"{base}/tuf/targets/",
            "root": await run_in_threadpool(self.plane.tuf_root),
        }
        return json_answer({"node_id": node_id, "node_token": node_token, "tuf": tuf}, 201)

    async def nodes(self, request: Request) -> Response:
        await self.admin(request)
        return json_answer({"nodes": await run_in_threadpool(self.plane.nodes)})

    async def node_get(self, request: Request) -> Response:
        await self.admin(request)
        return json_answer(await run_in_threadpool(self.plane.node, request.path_params["node_id"]))

    async def node_patch(self, request: Request) -> Response:
        await self.admin(request)
        node_id = request.path_params["node_id"]
        body = parse(schemas.NodePatchBody, await request.body())
        changes = body.model_dump(exclude_unset=True)
        await run_in_threadpool(fleet.patch, self.plane.db, node_id, changes)
        return json_answer(await run_in_threadpool(self.plane.node, node_id))

    async def desired(self, request: Request) -> Response:
        node_id = request.path_params["node_id"]
        _, revision = await self.node_revision(request, node_id, admin_ok=True)
        if revision is None:  # the admin asking
            reads, _ = self.plane.hot
            revision = await reads.run(
                f"reading node {node_id}", lambda c: fleet.revision(c, node_id)
            )
        etag = f'"{revision}"'
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers={"ETag": etag})
        # Revision 0: nothing desired yet (the target does not exist until revision 1).
        doc = {"node_id": node_id, "revision": revision, "target": f"deployments/{node_id}.json"}
        return json_answer(doc, headers={"ETag": etag})

    async def report(self, request: Request) -> Response:
        node_id = request.path_params["node_id"]
        await self.node(request, node_id)
        raw = await request.body()
        parse(schemas.ReportBody, raw)  # the checked JSON object is stored as it came
        text = raw.decode()
        _, writes = self.plane.hot
        await writes.run(
            f"recording the report of {node_id!r}",
            lambda c: fleet.store_report(c, node_id, text, time.time()),
        )
        return Response(status_code=204)

    async def telemetry_post(self, request: Request) -> Response:
        node_id = request.path_params["node_id"]
        await self.node(request, node_id)
        raw = await request.body()  # capped by BodyLimits (WireLimits.telemetry_bytes)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise DataError(f"the telemetry body is not JSON: {exc}") from exc
        items = telemetry.check_batch(body)
        _, writes = self.plane.hot
        rows, rejected = telemetry.prepare(node_id, items, time.time())
        answer = await writes.run(
            "storing telemetry", lambda c: telemetry.store_rows(c, node_id, rows, rejected)
        )
        return json_answer(answer)

    async def telemetry_get(self, request: Request) -> Response:
        await self.admin(request)
        params = dict(request.query_params)
        items = await run_in_threadpool(
            self.plane.read, "querying telemetry", lambda c: telemetry.query(c, params)
        )
        return json_answer({"items": items})

    async def models(self, request: Request) -> Response:
        await self.admin(request)
        versions = await run_in_threadpool(self.plane.registry.list)
        return json_answer({"models": [_model_row(v) for v in versions]})

    async def publish_model(self, request: Request) -> Response:
        await self.admin(request)
        try:
            form = await request.form()
        except EdgeError:  # over the cap, or too slow (BodyLimits)
            raise
        except Exception as exc:  # a malformed multipart body
            raise BadRequestError(f"the body is not multipart form data: {exc}") from exc
        try:
            upload, profile = form.get("file"), form.get("profile")
            texts = {k: v for k, v in form.multi_items() if k not in _UPLOAD_FILES}
            if (
                not isinstance(upload, UploadFile)
                or not isinstance(profile, UploadFile | None)
                or not all(isinstance(v, str) for v in texts.values())
                or len(form.multi_items()) != len(set(form.keys()))
            ):
                raise BadRequestError(
                    "POST /api/v1/models needs the multipart file 'file' (the artifact), the "
                    "field 'manifest' (JSON), optionally the file 'profile' (its reference "
                    "profile) and the fields 'version' and 'sha256', each once",
                    hint="the SDK's ControlClient.publish_model(file, manifest) sends them",
                )
            fields = schemas.parse_form(schemas.ModelUpload, texts)
            try:
                manifest = Manifest.from_dict(orjson.loads(fields.manifest))
            except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError) as exc:
                # AttributeError: JSON of another shape (null, a list) where an object belongs
                raise BadRequestError(f"the manifest field is not a valid manifest: {exc}") from exc
            # The upload is spooled to disk by the form parser; copied, never held in memory.
            extra = None if profile is None else profile.file
            record, status = await run_in_threadpool(
                self._publish, upload.file, extra, manifest, fields
            )
        finally:
            await form.close()
        return json_answer(record, status)

    def _publish(
        self,
        upload: BinaryIO,
        profile: BinaryIO | None,
        manifest: Manifest,
        fields: schemas.ModelUpload,
    ) -> tuple[dict[str, Any], int]:
        """The version's record and 201; or 200 with the record already there when the
        requested ``name:version`` holds these very bytes (a retried publish).

        Raises:
            UntrustedArtifactError: the bytes do not hash to the ``sha256`` field (422).
            ConflictError: the requested version holds another model (409).
            PayloadTooLargeError: a profile over ``PROFILE_BYTES`` (413).
        """
        with tempfile.TemporaryDirectory(prefix="edgeloop-upload-") as tmp:
            path = Path(tmp) / f"upload.{manifest.format}"
            upload.seek(0)
            digest = hashlib.sha256()
            with path.open("wb") as out:
                while chunk := upload.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
            sha = digest.hexdigest()
            if fields.sha256 is not None and fields.sha256 != sha:
                raise UntrustedArtifactError(
                    f"the uploaded file hashes to sha256 {sha}, not the {fields.sha256} the "
                    "'sha256' field names; nothing was published",
                    hint="the file changed on the way; publish it again",
                )
            version = None if fields.version is None else int(fields.version)
            if version is not None and (held := self._held(manifest.name, version)) is not None:
                if held.artifact_sha256 == sha:
                    return dict(held.to_dict()), 200
                raise ConflictError(
                    f"{manifest.name}:{version} is taken by another model (sha256 "
                    f"{held.artifact_sha256} there, {sha} uploaded); nothing was published",
                    hint="publish it as a new version (leave out 'version' for the next one)",
                )
            data = None if profile is None else _profile_bytes(profile)
            published = self.plane.registry.publish(path, manifest, version=version, profile=data)
            return dict(published.to_dict()), 201

    def _held(self, name: str, version: int) -> Any:
        """The registry's ``name:version``, or None when there is none."""
        try:
            return self.plane.registry.show(ModelRef(name, version))
        except NotFoundError:
            return None

    async def deploy(self, request: Request) -> Response:
        await self.admin(request)
        body = parse(schemas.DeploymentBody, await request.body())
        spec = DeploymentSpec.from_dict(body.model_dump(exclude_unset=True))
        return json_answer(await run_in_threadpool(self.plane.deploy, spec), 201)

    async def rollouts(self, request: Request) -> Response:
        await self.admin(request)
        return json_answer({"rollouts": await run_in_threadpool(self.plane.rollouts)})

    async def rollout_get(self, request: Request) -> Response:
        await self.admin(request)
        return json_answer(await run_in_threadpool(self.plane.rollout, request.path_params["rid"]))

    async def rollback(self, request: Request) -> Response:
        await self.admin(request)
        to = parse(schemas.RollbackBody, await request.body()).to
        rid = request.path_params["rid"]
        return json_answer(await run_in_threadpool(self.plane.rollback, rid, to))

    async def pause(self, request: Request) -> Response:
        await self.admin(request)
        return json_answer(await run_in_threadpool(self.plane.pause, request.path_params["rid"]))

    async def resume(self, request: Request) -> Response:
        await self.admin(request)
        return json_answer(await run_in_threadpool(self.plane.resume, request.path_params["rid"]))

    async def tuf_metadata(self, request: Request) -> Response:
        data = await run_in_threadpool(self.plane.repo.metadata, request.path_params["file"])
        return Response(data, media_type="application/json", headers={"Cache-Control": "no-store"})

    async def tuf_target(self, request: Request) -> Response:
        path = request.path_params["path"]
        folder, _, leaf = path.rpartition("/")
        sha, dot, name = leaf.partition(".")
        if not dot or not folder:
            raise NotFoundError(f"target URL {path!r} is not <dir>/<sha256>.<name>")
        if folder == "deployments":
            await self.node(request, name.removesuffix(".json"), admin_ok=True)
        else:
            await self.any_credential(request)
        found = await run_in_threadpool(self.plane.repo.target_bytes, f"{folder}/{name}", sha)
        if found.data is not None:
            return ranged(request, found.data)
        # Artifacts are content-addressed by the same sha256 TUF signs: ask the artifact store
        # (shared by replicas) rather than the path the publishing replica saw.
        path = await run_in_threadpool(self.plane.registry.artifacts.path, sha)
        return FileResponse(path, media_type="application/octet-stream")  # honours Range

    async def any_credential(self, request: Request) -> None:
        token = auth.bearer(request.headers.get("authorization"))
        if auth.same(token, self.plane.admin_hash):
            return
        if await run_in_threadpool(fleet.node_of_token, self.plane.db, token) is None:
            raise auth.UnauthorizedError("the token is not valid")


_UPLOAD_FILES = ("file", "profile")


def _profile_bytes(profile: BinaryIO) -> bytes:
    """The uploaded profile's bytes, at most ``PROFILE_BYTES`` (a profile is small by design)."""
    from edgeloop.control.limits import PROFILE_BYTES

    profile.seek(0)
    data = profile.read(PROFILE_BYTES + 1)
    if len(data) > PROFILE_BYTES:
        raise PayloadTooLargeError(
            f"the 'profile' file is over {PROFILE_BYTES} bytes; a reference profile is far "
            "smaller (docs/monitoring.md)",
            hint="upload the profile `edgeloop registry profile NAME:VERSION --out FILE` wrote",
        )
    return data


def _model_row(version: Any) -> dict[str, Any]:
    return {
        "name": version.name,
        "version": version.version,
        "ref": str(version.ref),
        "sha256": version.artifact_sha256,
        "size_bytes": version.size_bytes,
        "format": version.manifest.format,
        "created_at": version.created_at.isoformat(),
        "manifest": version.manifest.to_dict(),  # measurements, data set, recipe (the SDK)
    }


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
        (f"{v1}/models", api.models, "GET", Body.NONE),
        (f"{v1}/models", api.publish_model, "POST", Body.MODEL),
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
    app.state.failures = failures or FailureLimit()
    app.add_middleware(Throttled, limit=app.state.failures)  # outermost: before any credential
    app.add_exception_handler(EdgeError, answers.edge_error)
    app.add_exception_handler(HTTPException, answers.http_error)
    app.add_exception_handler(ClientDisconnect, answers.gone)
    app.add_exception_handler(Exception, answers.unexpected)
    return app
