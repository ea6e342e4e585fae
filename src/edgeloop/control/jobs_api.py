"""The retraining-job routes (registered in :mod:`edgeloop.control.app` by one line).

=========================================  =========  ========================================
route                                      auth       answer
=========================================  =========  ========================================
``POST /api/v1/jobs/retrain``              admin      202 the queued job (409 + ``job_id`` when
                                                      one runs for the model)
``GET  /api/v1/jobs?model=&active=``       admin      ``{"jobs": [...]}``, newest first
``GET  /api/v1/jobs/{job_id}?after=N``     admin      the job and its log lines after N
``POST /api/v1/jobs/{job_id}/cancel``      admin      202 the job (cancel asked or done)
=========================================  =========  ========================================

The control plane never runs a job itself and never imports torch: ``submit`` starts the job's
own process through an :class:`~edgeloop.pipeline.retrain_executor.Executor` (a local process
by default), against the control plane's own registry database and artifact store. When the
routes are made (the control plane starting) the jobs whose process died while it was down are
recovered: failed with the reason, their registered versions removed.
"""

from __future__ import annotations

import logging
from contextlib import closing
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from edgeloop.control import openapi
from edgeloop.control.answers import json_answer
from edgeloop.control.limits import Body
from edgeloop.control.schedule_tick import ScheduleTicker
from edgeloop.control.schemas import parse
from edgeloop.core.errors import ConfigError, EdgeError
from edgeloop.core.settings import Settings
from edgeloop.pipeline.retrain_executor import Executor, LocalProcessExecutor
from edgeloop.pipeline.retrain_job import cancel, recover, submit
from edgeloop.pipeline.retrain_policy import RetrainPolicy, specs_for
from edgeloop.pipeline.retrain_spec import RetrainSpec, Trigger
from edgeloop.registry.job_store import JobStore
from edgeloop.registry.jobs import JobRunningError

if TYPE_CHECKING:
    from edgeloop.control.app import Api, Endpoint
    from edgeloop.control.plane import ControlPlane

V1 = "/api/v1"
log = logging.getLogger("edgeloop.control.jobs")


class RetrainBody(BaseModel):
    """``POST /api/v1/jobs/retrain``: the fields of ``edgeloop retrain``."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)
    model: str
    data: list[str]
    init: str = "champion"
    checkpoint: str | None = None
    epochs: int | None = None
    holdout: float = 0.3
    max_original_drop: float = 0.01
    min_recent_gain: float = 0.0
    recent_repeat: int = 0
    trigger: str = "manual"
    seed: int = 0
    optimize: bool = True


class JobDoc(BaseModel):
    id: str
    kind: str
    model: str
    state: str
    step: str
    progress: float
    reason: str
    cancel_requested: bool
    spec: dict[str, Any]
    result: dict[str, Any] | None
    created_at: str
    finished_at: str | None


class JobList(BaseModel):
    jobs: list[JobDoc]


openapi.ROUTES.update(
    {
        ("POST", f"{V1}/jobs/retrain"): openapi.Doc(
            "Queue a retraining job (409 with job_id when one runs for the model)", "admin",
            JobDoc, 202, RetrainBody),
        ("GET", f"{V1}/jobs"): openapi.Doc(
            "Jobs, newest first (query: model, active)", "admin", JobList),
        ("GET", f"{V1}/jobs/{{job_id}}"): openapi.Doc(
            "A job and its log (query: after, the last line seen)", "admin", JobDoc),
        ("POST", f"{V1}/jobs/{{job_id}}/cancel"): openapi.Doc(
            "Ask a job to stop", "admin", JobDoc, 202),
    }
)  # fmt: skip


class JobRoutes:
    """The routes over one :class:`~edgeloop.control.app.Api`; recovers dead jobs on creation."""

    def __init__(self, api: Api, executor: Executor | None = None) -> None:
        self.api = api
        self.settings = api.plane.settings
        self.executor = executor or LocalProcessExecutor()
        self.store = JobStore(self.settings.db_url)  # its own engine: closed with the plane
        api.plane.on_close(self.store.close)
        recover(self.store, self.executor, self.settings)

    def routes(self) -> list[tuple[str, Endpoint, str, Body]]:
        return [
            (f"{V1}/jobs/retrain", self.retrain, "POST", Body.JSON),
            (f"{V1}/jobs", self.jobs, "GET", Body.NONE),
            (f"{V1}/jobs/{{job_id}}", self.job, "GET", Body.NONE),
            (f"{V1}/jobs/{{job_id}}/cancel", self.cancel, "POST", Body.NONE),
        ]

    async def retrain(self, request: Request) -> Response:
        await self.api.admin(request)
        body = parse(RetrainBody, await request.body())
        spec = RetrainSpec.from_dict(body.model_dump())
        try:
            job = await run_in_threadpool(submit, spec, self.settings, self.store, self.executor)
        except JobRunningError as exc:  # the usual error body plus the running job's id
            answer = {"error": exc.message, "type": type(exc).__name__, "hint": exc.hint}
            return json_answer({**answer, "job_id": exc.job_id}, exc.http_status)
        return json_answer(job.to_dict(), 202)

    async def jobs(self, request: Request) -> Response:
        await self.api.admin(request)
        params = dict(request.query_params)
        _known(params, {"model", "active"})
        active = params.get("active", "false") in ("1", "true")
        found = await run_in_threadpool(self.store.list, params.get("model"), active=active)
        return json_answer({"jobs": [j.to_dict() for j in found]})

    async def job(self, request: Request) -> Response:
        await self.api.admin(request)
        job_id = request.path_params["job_id"]
        params = dict(request.query_params)
        _known(params, {"after"})
        after = params.get("after", "0")
        if not after.isdigit():
            raise ConfigError(f"query field 'after' is {after[:32]!r}; expected a line number")
        job = await run_in_threadpool(self.store.get, job_id)
        lines = await run_in_threadpool(self.store.logs, job_id, int(after))
        return json_answer({**job.to_dict(), "log": [x.to_dict() for x in lines]})

    async def cancel(self, request: Request) -> Response:
        await self.api.admin(request)
        job_id = request.path_params["job_id"]
        job = await run_in_threadpool(cancel, job_id, self.store, self.executor)
        return json_answer(job.to_dict(), 202)


class PolicyTrigger:
    """The retraining policies at run time. Called by
    :class:`~edgeloop.control.alerting.Alerting` with the alerts each evaluation opened, it
    starts the jobs the policies ask for; :meth:`tick` (each control tick,
    control/loop.py) starts the jobs of due schedule slots (control/schedule_tick.py). A job
    already running for the model (409) means it is being handled; a refused request (a data
    set without labels) is logged, never raised: the loops must go on."""

    def __init__(
        self,
        policies: tuple[RetrainPolicy, ...],
        settings: Settings,
        executor: Executor | None = None,
    ) -> None:
        self.policies = policies
        self.settings = settings
        self.executor = executor or LocalProcessExecutor()
        self.started: list[str] = []  # job ids, for the operator's log and the tests
        self.schedules = ScheduleTicker(policies, self)

    def __call__(self, opened: tuple[Any, ...]) -> None:
        for spec in specs_for(opened, self.policies):
            self.start(spec)

    def tick(self, plane: ControlPlane) -> None:
        """Start the jobs of the schedule slots due now."""
        self.schedules.tick(plane)

    def start(self, spec: RetrainSpec) -> tuple[str | None, str]:
        """Submit ``spec``: the new job's id (None when none was created) and the outcome."""
        with closing(JobStore(self.settings.db_url)) as store:
            try:
                job = submit(spec, self.settings, store, self.executor)
            except JobRunningError as exc:
                outcome, job_id = f"job {exc.job_id} runs already (409)", None
            except EdgeError as exc:
                log.warning("retrain policy for %s: not started: %s", spec.model, exc)
                return None, f"not started: {exc}"
            else:
                outcome, job_id = f"job {job.id} started", job.id
                self.started.append(job.id)
        log.info("retrain policy for %s (%s): %s", spec.model, spec.trigger.value, outcome)
        return job_id, outcome

    def started_since(self, model: str, since: float) -> str | None:
        with closing(JobStore(self.settings.db_url)) as store:
            for job in store.list(model):  # newest first
                if job.created_at.timestamp() < since:
                    return None
                if job.spec.get("trigger") == Trigger.SCHEDULE.value:
                    return job.id
        return None


def _known(params: dict[str, str], allowed: set[str]) -> None:
    for key in params:
        if key not in allowed:
            raise ConfigError(
                f"query field {key!r} is not known; expected one of {sorted(allowed)}"
            )
