"""Incremental training run on a node: the admin asks, the node's agent trains and reports back.

    POST /api/v1/node-trainings                                admin  the job -> 202
    GET  /api/v1/node-trainings/{tid}                          admin  the job (state, result)
    GET  /api/v1/nodes/{node_id}/trainings/next                node   oldest queued job, or 204
    GET  /api/v1/nodes/{node_id}/trainings/{tid}/files/{key}   node   a file the job names
    POST /api/v1/nodes/{node_id}/trainings/{tid}               node   the result or the error

As for benchmarks (control/bench_api.py), the node takes the command only through the control
plane: its agent polls with its node token (agent/train_worker.py). A job names the model
version the node should fine-tune (it must hold it: the version it serves) and where the new
samples come from: ``"captures"`` (the node's own captured and labelled rows, which it keeps
locally) or the sha256 of an ``.npz`` (``x``, ``y``) put with ``POST /api/v1/artifacts``.
The node fetches the version's torch checkpoint (``recipe.checkpoint``), and the optional old
data (forgetting is measured on it) and replay seed, through the files route, which serves
exactly the files its running job names and nothing else (artifacts are otherwise admin-only).
A version without a checkpoint whose lineage parent has one (the optimize stage's INT8 edge
variant, child of the FP32 version) is trained from the parent's checkpoint when its recipe is
post-training quantization a node can redo (optimize/rebuild.py): the job's ``rebuild`` names
the parent and the recipe, and the node quantizes its fine-tuned export again before the
forgetting check; another recipe is refused at once with a ConfigError naming it.
Jobs live in the control plane's memory: a restart loses them (the SDK's wait then ends with a
404 naming the job); what a node installed stays installed and is in its reports.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, Response

from edgeloop.control import openapi
from edgeloop.control.answers import json_answer
from edgeloop.control.artifacts_api import SHA256
from edgeloop.control.bench_api import BenchRoutes
from edgeloop.control.limits import Body
from edgeloop.control.schemas import parse
from edgeloop.core.errors import ConfigError, NotFoundError
from edgeloop.core.types import ModelRef
from edgeloop.optimize.rebuild import rebuild_plan

if TYPE_CHECKING:
    from edgeloop.control.app import Endpoint

V1 = "/api/v1"
MAX_KEPT = 1000  # finished jobs kept for reading (the oldest are dropped first)
FILE_KEYS = ("weights", "config", "data", "old_data", "replay")
Sha = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class TrainOptions(BaseModel):
    """The worker's settings (``python -m edgeloop.training.on_device_worker``); the node checks
    the values again (IncrementalConfig) and answers a bad one with the error."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)
    lr: Annotated[float, Field(gt=0, le=10)] | None = None
    batch_size: Annotated[int, Field(ge=2, le=4096)] | None = None
    replay_size: Annotated[int, Field(ge=0, le=1_000_000)] | None = None
    replay_share: Annotated[float, Field(ge=0, lt=1)] | None = None
    last_layers: Annotated[int, Field(ge=1, le=1000)] | None = None
    max_forgetting_pp: Annotated[float, Field(ge=-100, le=100)] | None = None
    min_gain_pp: Annotated[float, Field(ge=-100, le=100)] | None = None
    seed: Annotated[int, Field(ge=0, le=2**31)] | None = None
    max_seconds: Annotated[float, Field(gt=0, le=86_400)] | None = None
    max_memory_mb: Annotated[float, Field(gt=0, le=1_000_000)] | None = None
    threads: Annotated[int, Field(ge=1, le=256)] | None = None
    update_norm_stats: bool | None = None


class TrainBody(BaseModel):
    """``POST /api/v1/node-trainings``."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)
    node: Annotated[str, Field(min_length=1, max_length=128)]
    model: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}:[0-9]{1,9}$")]
    epochs: Annotated[int, Field(ge=1, le=10_000)] = 10
    data: Literal["captures"] | Sha = "captures"
    old_data: Sha | None = None
    replay: Sha | None = None
    options: TrainOptions = TrainOptions()


class TrainAnswer(BaseModel):
    """A node's answer: the run's figures and what the updater did, or the error."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)
    result: dict[str, Any] | None = None
    error: Annotated[str, Field(max_length=4000)] | None = None


class TrainJob(BaseModel):
    job_id: str
    node_id: str
    model: str
    epochs: int
    data: str
    options: dict[str, Any]
    files: dict[str, str]
    rebuild: dict[str, str] | None = None  # an edge variant redone from its parent (module doc)
    state: str  # queued, running, done (installed), rejected, failed
    created_at: float
    result: dict[str, Any] | None
    error: str | None


openapi.ROUTES.update(
    {
        ("POST", f"{V1}/node-trainings"): openapi.Doc(
            "Ask a node to fine-tune a model version it serves (on-device incremental training)",
            "admin", TrainJob, 202, TrainBody),
        ("GET", f"{V1}/node-trainings/{{tid}}"): openapi.Doc(
            "A node training job", "admin", TrainJob),
        ("GET", f"{V1}/nodes/{{node_id}}/trainings/next"): openapi.Doc(
            "The node's oldest queued training job (204: none)", "node", TrainJob),
        ("GET", f"{V1}/nodes/{{node_id}}/trainings/{{tid}}/files/{{key}}"): openapi.Doc(
            "A file the node's running training job names (checkpoint, data)", "node", None,
            200, None, "application/octet-stream"),
        ("POST", f"{V1}/nodes/{{node_id}}/trainings/{{tid}}"): openapi.Doc(
            "A node's training result", "node", None, 204, TrainAnswer),
    }
)  # fmt: skip


class TrainRoutes(BenchRoutes):
    """The routes over one :class:`~edgeloop.control.app.Api`; jobs in memory. The queue is
    the benchmarks' (``next`` hands a node its oldest queued job; a claimed job without an
    answer within bench_api.CLAIM_TIMEOUT_S is failed: the agent ends its worker before)."""

    def routes(self) -> list[tuple[str, Endpoint, str, Body]]:
        node = f"{V1}/nodes/{{node_id}}/trainings"
        return [
            (f"{V1}/node-trainings", self.create, "POST", Body.JSON),
            (f"{V1}/node-trainings/{{tid}}", self.get, "GET", Body.NONE),
            (f"{node}/next", self.next, "GET", Body.NONE),
            (f"{node}/{{tid}}/files/{{key}}", self.file, "GET", Body.NONE),
            (f"{node}/{{tid}}", self.result, "POST", Body.REPORT),
        ]

    async def create(self, request: Request) -> Response:
        await self.api.admin(request)
        body = parse(TrainBody, await request.body())
        node_id = await run_in_threadpool(self._node_id, body.node)
        files, rebuild = await run_in_threadpool(self._files, body)
        job_id = uuid.uuid4().hex[:12]
        job: dict[str, Any] = {
            "job_id": job_id, "node_id": node_id, "model": body.model, "epochs": body.epochs,
            "data": body.data, "options": body.options.model_dump(exclude_none=True),
            "files": files, "rebuild": rebuild, "state": "queued", "created_at": time.time(),
            "result": None, "error": None,
        }  # fmt: skip
        return self._enqueue(job)

    async def get(self, request: Request) -> Response:
        await self.api.admin(request)
        with self._lock:
            self._expire(time.time())
            return json_answer(_public(self._job(request.path_params["tid"])))

    async def file(self, request: Request) -> Response:
        node_id, tid = request.path_params["node_id"], request.path_params["tid"]
        key = request.path_params["key"]
        await self.api.node(request, node_id)
        with self._lock:
            job = self._running(node_id, tid)
            sha = job["files"].get(key)
        if sha is None:
            raise NotFoundError(
                f"training job {tid} names no file {key!r}; it names {sorted(job['files'])}"
            )
        store = self.api.plane.registry.artifacts
        if not await run_in_threadpool(store.exists, sha):
            raise NotFoundError(f"artifact {sha} ({key}) is no longer stored on this plane")
        path = await run_in_threadpool(store.path, sha)
        return FileResponse(path, media_type="application/octet-stream")

    async def result(self, request: Request) -> Response:
        node_id, tid = request.path_params["node_id"], request.path_params["tid"]
        await self.api.node(request, node_id)
        answer = parse(TrainAnswer, await request.body())
        with self._lock:
            job = self._running(node_id, tid)
            if answer.result is not None and answer.error is None:
                installed = answer.result.get("installed") is True
                job.update(state="done" if installed else "rejected", result=answer.result)
            else:
                job.update(state="failed", result=answer.result,
                           error=answer.error or "the node sent no result")  # fmt: skip
        return Response(status_code=204)

    def _files(self, body: TrainBody) -> tuple[dict[str, str], dict[str, str] | None]:
        """The artifacts the job names (the checkpoint to fine-tune and the data files given)
        and, for an edge variant rebuilt from its parent, ``{"parent", "recipe"}``.

        Raises:
            NotFoundError: no such version, or a data file not stored.
            ConfigError: neither the version nor its lineage parent has a torch checkpoint,
                or the variant's recipe is one a node cannot redo (named).
        """
        registry = self.api.plane.registry
        version = registry.show(ModelRef.parse(body.model))
        found, rebuild = _checkpoint(version.manifest.recipe), None
        if found is None and version.manifest.parent is not None:
            parent = registry.show(version.manifest.parent)
            found = _checkpoint(parent.manifest.recipe)
            if found is not None:  # the variant is redone from the parent's weights
                plan = rebuild_plan(version.manifest.recipe, version.manifest.format, body.model)
                rebuild = {"parent": str(parent.ref), "recipe": str(plan)}
        if found is None:
            parent_says = (
                f" nor does its parent {version.manifest.parent}"
                if version.manifest.parent is not None else ""
            )  # fmt: skip
            raise ConfigError(
                f"model {body.model} has no torch checkpoint registered (its manifest names no "
                f"recipe.checkpoint){parent_says}; incremental training changes the torch weights",
                hint="publish the model with its checkpoint folder: `edgeloop fleet publish "
                "MODEL.onnx --name NAME --checkpoint DIR` (an edge variant: its parent, with "
                "the variant's manifest naming it as parent)",
            )
        files = dict(found)
        given = {"data": None if body.data == "captures" else body.data,
                 "old_data": body.old_data, "replay": body.replay}  # fmt: skip
        store = registry.artifacts
        for key, sha in given.items():
            if sha is None:
                continue
            if not SHA256.match(sha) or not store.exists(sha):
                raise NotFoundError(
                    f"{key} artifact {sha} is not stored on this control plane",
                    hint="put the .npz with POST /api/v1/artifacts first",
                )
            files[key] = sha
        return files, rebuild

    def _running(self, node_id: str, tid: str) -> dict[str, Any]:
        job = self._job(tid)
        if job["node_id"] != node_id or job["state"] != "running":
            raise NotFoundError(f"node {node_id} holds no running training job {tid}")
        return job

    def _job(self, tid: str) -> dict[str, Any]:
        job = self._jobs.get(tid)
        if job is None:
            raise NotFoundError(
                f"training job {tid!r} is not known here (jobs live in the control plane's "
                "memory: a restart forgets them)",
                hint="ask again: POST /api/v1/node-trainings",
            )
        return job

    def _trim(self) -> None:
        ended = [j for j in self._jobs.values() if j["state"] in ("done", "rejected", "failed")]
        for job in sorted(ended, key=lambda j: j["created_at"])[: max(0, len(ended) - MAX_KEPT)]:
            del self._jobs[job["job_id"]]


def _checkpoint(recipe: Mapping[str, Any] | None) -> dict[str, str] | None:
    """``{"weights", "config"}`` sha256s of a manifest's ``recipe.checkpoint``, or None."""
    found = (recipe or {}).get("checkpoint")
    if not (isinstance(found, dict) and {"weights", "config"} <= set(found)):
        return None
    return {"weights": str(found["weights"]), "config": str(found["config"])}


def _public(job: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in job.items() if k != "claimed_at"}
