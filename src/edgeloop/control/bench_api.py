"""Benchmarks run on a node: the admin asks, the node's agent measures and reports back.

    POST /api/v1/benchmarks                             admin  {"node", "model", "runs", ...} -> 202
    GET  /api/v1/benchmarks/{bid}                       admin  the job (state, result)
    GET  /api/v1/nodes/{node_id}/benchmarks/next        node   the oldest queued job -> 200, or 204
    POST /api/v1/nodes/{node_id}/benchmarks/{bid}       node   the measurement or the error -> 204

The node never takes a command on a route of its own (agents take admin commands only through
the control plane): its agent polls with its node token, as for federated rounds. A job is for
a model version the node holds (it benchmarks the file in its slot; nothing is downloaded).
Jobs live in the control plane's memory: a restart loses queued ones (the SDK's wait then
ends with a 404 naming the job), which is acceptable for a measurement one can ask again.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from edgeloop.control import fleet, openapi
from edgeloop.control.answers import json_answer
from edgeloop.control.limits import Body
from edgeloop.control.schemas import parse
from edgeloop.core.errors import NotFoundError

if TYPE_CHECKING:
    from edgeloop.control.app import Api, Endpoint

V1 = "/api/v1"
MAX_KEPT = 1000  # finished jobs kept for reading (the oldest are dropped first)
CLAIM_TIMEOUT_S = 600.0  # a claimed job without a result after this is failed


class BenchBody(BaseModel):
    """``POST /api/v1/benchmarks``."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)
    node: Annotated[str, Field(min_length=1, max_length=128)]
    model: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}:[0-9]{1,9}$")]
    runs: Annotated[int, Field(ge=1, le=100_000)] = 200
    warmup: Annotated[int, Field(ge=0, le=10_000)] = 20
    batch_size: Annotated[int, Field(ge=1, le=4096)] = 1


class BenchResult(BaseModel):
    """A node's answer: a Measurement dict, or the error that stopped it."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)
    measurement: dict[str, Any] | None = None
    error: Annotated[str, Field(max_length=4000)] | None = None


class BenchJob(BaseModel):
    job_id: str
    node_id: str
    model: str
    runs: int
    warmup: int
    batch_size: int
    state: str  # queued, running, done, failed
    created_at: float
    measurement: dict[str, Any] | None
    error: str | None


openapi.ROUTES.update(
    {
        ("POST", f"{V1}/benchmarks"): openapi.Doc(
            "Ask a node to benchmark a model version it holds", "admin", BenchJob, 202,
            BenchBody),
        ("GET", f"{V1}/benchmarks/{{bid}}"): openapi.Doc("A benchmark job", "admin", BenchJob),
        ("GET", f"{V1}/nodes/{{node_id}}/benchmarks/next"): openapi.Doc(
            "The node's oldest queued benchmark (204: none)", "node", BenchJob),
        ("POST", f"{V1}/nodes/{{node_id}}/benchmarks/{{bid}}"): openapi.Doc(
            "A node's benchmark result", "node", None, 204, BenchResult),
    }
)  # fmt: skip


class BenchRoutes:
    """The routes over one :class:`~edgeloop.control.app.Api`; jobs in memory."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self._jobs: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def routes(self) -> list[tuple[str, Endpoint, str, Body]]:
        return [
            (f"{V1}/benchmarks", self.create, "POST", Body.JSON),
            (f"{V1}/benchmarks/{{bid}}", self.get, "GET", Body.NONE),
            (f"{V1}/nodes/{{node_id}}/benchmarks/next", self.next, "GET", Body.NONE),
            (f"{V1}/nodes/{{node_id}}/benchmarks/{{bid}}", self.result, "POST", Body.REPORT),
        ]

    async def create(self, request: Request) -> Response:
        await self.api.admin(request)
        body = parse(BenchBody, await request.body())
        node_id = await run_in_threadpool(self._node_id, body.node)
        job_id = uuid.uuid4().hex[:12]
        job: dict[str, Any] = {
            "job_id": job_id, "node_id": node_id, "model": body.model,
            "runs": body.runs, "warmup": body.warmup, "batch_size": body.batch_size,
            "state": "queued", "created_at": time.time(), "measurement": None, "error": None,
        }  # fmt: skip
        return self._enqueue(job)

    def _enqueue(self, job: dict[str, Any]) -> Response:
        """Queue ``job`` (fields ``job_id``, ``node_id``, ``state`` queued, ``created_at``) for
        its node's ``next``; answers it with 202."""
        with self._lock:
            self._jobs[job["job_id"]] = job
            self._trim()
        return json_answer(job, 202)

    async def get(self, request: Request) -> Response:
        await self.api.admin(request)
        with self._lock:
            self._expire(time.time())
            return json_answer(dict(self._job(request.path_params["bid"])))

    async def next(self, request: Request) -> Response:
        node_id = request.path_params["node_id"]
        await self.api.node(request, node_id)
        with self._lock:
            self._expire(time.time())
            queued = [j for j in self._jobs.values()
                      if j["node_id"] == node_id and j["state"] == "queued"]  # fmt: skip
            if not queued:
                return Response(status_code=204)
            job = min(queued, key=lambda j: j["created_at"])
            job.update(state="running", claimed_at=time.time())
            return json_answer({k: v for k, v in job.items() if k != "claimed_at"})

    async def result(self, request: Request) -> Response:
        node_id, bid = request.path_params["node_id"], request.path_params["bid"]
        await self.api.node(request, node_id)
        answer = parse(BenchResult, await request.body())
        with self._lock:
            job = self._job(bid)
            if job["node_id"] != node_id or job["state"] != "running":
                raise NotFoundError(f"node {node_id} holds no running benchmark {bid}")
            ok = answer.measurement is not None and answer.error is None
            error = None if ok else answer.error or "the node sent no measurement"
            job.update(state="done" if ok else "failed", measurement=answer.measurement,
                       error=error)  # fmt: skip
        return Response(status_code=204)

    def _node_id(self, node: str) -> str:
        """The enrolled node named or numbered ``node``. Raises NotFoundError listing them."""
        rows = self.api.plane.read("listing nodes", fleet.rows)
        for row in rows:
            if node in (row.node_id, row.name):
                return str(row.node_id)
        names = ", ".join(sorted(str(r.name) for r in rows)) or "none"
        raise NotFoundError(f"node {node!r} is not enrolled (nodes: {names})")

    def _job(self, bid: str) -> dict[str, Any]:
        job = self._jobs.get(bid)
        if job is None:
            raise NotFoundError(
                f"benchmark {bid!r} is not known here (jobs live in the control plane's "
                "memory: a restart forgets them)",
                hint="ask again: POST /api/v1/benchmarks",
            )
        return job

    def _expire(self, now: float) -> None:
        for job in self._jobs.values():
            if job["state"] == "running" and now - job.get("claimed_at", now) > CLAIM_TIMEOUT_S:
                job.update(state="failed", error=f"no result within {CLAIM_TIMEOUT_S:.0f} s")

    def _trim(self) -> None:
        ended = [j for j in self._jobs.values() if j["state"] not in ("queued", "running")]
        for job in sorted(ended, key=lambda j: j["created_at"])[: max(0, len(ended) - MAX_KEPT)]:
            del self._jobs[job["job_id"]]
