"""The control plane's route state: one :class:`Api` over a :class:`ControlPlane`, its
credential checks (admin, a node acting as itself, any credential) and the core routes: health,
enrollment, nodes, desired state, reports, telemetry, deployments, rollouts and the TUF
repository. :mod:`edgeloop.control.app` lists the routes and assembles the app; each
``*_api`` module holds one more group of routes over the same :class:`Api`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, Response

from edgeloop import __version__
from edgeloop.control import auth, fleet, openapi, schemas, telemetry
from edgeloop.control.answers import json_answer, ranged
from edgeloop.control.deployments import DeploymentSpec
from edgeloop.control.plane import ControlPlane
from edgeloop.control.schemas import parse
from edgeloop.core.errors import DataError, NotFoundError

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
