"""Admin routes for content-addressed side files of a model: its torch checkpoint.

    POST /api/v1/artifacts           multipart file 'file' -> 201 {"sha256", "size_bytes"}
    GET  /api/v1/artifacts/{sha256}  the bytes (404 when not stored)

A registered ONNX file has folded batch norms, so weight-changing methods (pruning, QAT,
warm-started retraining) need the torch checkpoint it was exported from. A checkpoint is two
files (``model.pt``, ``model.json``); a manifest names them by sha256 in
``recipe.checkpoint = {"weights": SHA, "config": SHA}``, as a retraining job does when it
stores one (pipeline/retrain_model.py). These routes let an admin client put those files in the
artifact store before publishing the manifest and read them back later (a registered model's
own file is there under its sha256 too); they are admin calls only (a node token gets 403),
since a checkpoint is training material, not an update target.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import FileResponse, Response

from edgeloop.control import openapi
from edgeloop.control.answers import json_answer
from edgeloop.control.limits import Body
from edgeloop.core.errors import EdgeError, NotFoundError
from edgeloop.serving.errors import BadRequestError

if TYPE_CHECKING:
    from edgeloop.control.app import Api, Endpoint

SHA256 = re.compile(r"^[0-9a-f]{64}$")
V1 = "/api/v1"


class StoredArtifact(BaseModel):
    sha256: str
    size_bytes: int


openapi.ROUTES.update(
    {
        ("POST", f"{V1}/artifacts"): openapi.Doc(
            "Store a side file of a model (its torch checkpoint) by sha256 (multipart: file)",
            "admin", StoredArtifact, 201, None, "multipart/form-data"),
        ("GET", f"{V1}/artifacts/{{sha}}"): openapi.Doc(
            "A stored artifact's bytes", "admin", None, 200, None, "application/octet-stream"),
    }
)  # fmt: skip


class ArtifactRoutes:
    """The routes over one :class:`~edgeloop.control.app.Api`."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def routes(self) -> list[tuple[str, Endpoint, str, Body]]:
        v = f"{V1}/artifacts"
        return [(v, self.put, "POST", Body.MODEL), (f"{v}/{{sha}}", self.get, "GET", Body.NONE)]

    async def put(self, request: Request) -> Response:
        await self.api.admin(request)
        try:
            form = await request.form()
        except EdgeError:
            raise
        except Exception as exc:  # a malformed multipart body
            raise BadRequestError(f"the body is not multipart form data: {exc}") from exc
        try:
            upload = form.get("file")
            if not isinstance(upload, UploadFile) or len(form.multi_items()) != 1:
                raise BadRequestError(
                    "POST /api/v1/artifacts takes one multipart file 'file' and nothing else",
                    hint="the SDK's edgeloop.sdk.checkpoints.publish_checkpoint sends it",
                )
            info = await run_in_threadpool(self._store, upload.file)
        finally:
            await form.close()
        return json_answer(info, 201)

    def _store(self, upload: BinaryIO) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="edgeloop-artifact-") as tmp:
            path = Path(tmp) / "upload"
            upload.seek(0)
            with path.open("wb") as out:
                shutil.copyfileobj(upload, out, 1 << 20)
            info = self.api.plane.registry.artifacts.put(path)
        return info.to_dict()

    async def get(self, request: Request) -> Response:
        await self.api.admin(request)
        sha = request.path_params["sha"]
        if not SHA256.match(sha):
            raise BadRequestError(f"{sha!r} is not a sha256 digest (64 lowercase hex digits)")
        store = self.api.plane.registry.artifacts
        if not await run_in_threadpool(store.exists, sha):
            raise NotFoundError(
                f"artifact {sha} is not stored on this control plane",
                hint="put it with POST /api/v1/artifacts first",
            )
        path = await run_in_threadpool(store.path, sha)
        return FileResponse(path, media_type="application/octet-stream")
