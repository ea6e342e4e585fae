"""The fleet A/B experiment routes (included in :mod:`edgeloop.control.app`).

=================================================  =====  ====================================
route                                              auth   answer
=================================================  =====  ====================================
``POST /api/v1/experiments``                       admin  201, the experiment (control/experiments)
``GET  /api/v1/experiments``                       admin  ``{"experiments": [short rows]}``
``GET  /api/v1/experiments/{eid}``                 admin  the experiment, with a fresh look
``POST /api/v1/experiments/{eid}/promote``         admin  the experiment (``{"force": bool}``)
``POST /api/v1/experiments/{eid}/revert``          admin  the experiment
=================================================  =====  ====================================
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from edgeloop.control import experiment_store as store
from edgeloop.control import experiments, openapi, schemas
from edgeloop.control.answers import json_answer
from edgeloop.control.limits import Body

if TYPE_CHECKING:
    from edgeloop.control.app import Api, Endpoint

V1 = "/api/v1/experiments"
Finite = Annotated[float, Field(allow_inf_nan=False)]


SplitShare = Annotated[float, Field(
    allow_inf_nan=False,
    description="the challenger's share of the traffic as a fraction in (0, 1), e.g. 0.5 "
    "(not percent: the CLI's --split 50 sends 0.5); left out with shadow")]  # fmt: skip


class ExperimentBody(schemas._Admin):
    """``POST /api/v1/experiments``: ``split`` is the challenger's share of the traffic as a
    fraction in (0, 1) (the CLI and the SDK take percent and divide by 100)."""

    name: schemas.Name
    model: schemas.Name
    champion: Annotated[int, Field(ge=1, le=10**9)]
    challenger: Annotated[int, Field(ge=1, le=10**9)]
    split: SplitShare | None = None
    metric: Annotated[
        str,
        StringConstraints(max_length=32),
        Field(
            description="accuracy, error_rate, latency_p99 or confidence (mean top-1 probability: "
            "a proxy, the experiment's documents then carry a caveat)"
        ),
    ] = "accuracy"
    nodes: Annotated[list[schemas.Name], Field(min_length=1, max_length=10_000)] | None = None
    selector: schemas.SelectorBody | None = None
    alpha: Finite = 0.05
    min_effect: Finite = 0.02
    horizon_per_arm: Annotated[int, Field(ge=2, le=10**12)] = 100_000
    latency_threshold_ms: Finite = 100.0
    plan: schemas.PlanBody | None = None
    # metric -> how much worse the challenger may be (metric units): stops it early when worse
    guardrails: Annotated[dict[Annotated[str, StringConstraints(max_length=32)], Finite],
                          Field(max_length=8)] | None = None  # fmt: skip
    mixing: Annotated[
        str,
        StringConstraints(max_length=16),
        Field(
            description="two_point (the default: fewest samples at min_effect) or normal "
            "(detects effects well below min_effect too)"
        ),
    ] = experiments.DEFAULT_MIXING.value
    # the challenger gets a copy of every request and answers nobody (no split; no accuracy)
    shadow: bool = False


class PromoteBody(schemas._Admin):
    force: bool = False


class RevertBody(schemas._Admin):
    """``POST .../revert`` takes an empty object (or no body)."""


class ExperimentDoc(BaseModel):
    model_config = ConfigDict(extra="allow")
    experiment_id: str
    model: str
    champion: int
    challenger: int
    split: float
    state: str
    decision: str | None
    # set when the metric is a proxy (confidence): "confidence is not correctness"
    caveat: str | None = None


class ExperimentList(BaseModel):
    experiments: list[ExperimentDoc]


openapi.ROUTES.update({
    ("POST", V1): openapi.Doc(
        "Start a fleet A/B experiment (400 bad split or metric, 404 unknown version or node, "
        "409 another experiment on the model, differing inputs, an offline or busy node)",
        "admin", ExperimentDoc, 201, ExperimentBody),
    ("GET", V1): openapi.Doc("Every experiment", "admin", ExperimentList),
    ("GET", f"{V1}/{{eid}}"): openapi.Doc(
        "One experiment: per-arm figures, the sequential decision and its evidence", "admin",
        ExperimentDoc),
    ("POST", f"{V1}/{{eid}}/promote"): openapi.Doc(
        "Roll the challenger out (409 unless the decision is promote_treatment or force)",
        "admin", ExperimentDoc, 200, PromoteBody),
    ("POST", f"{V1}/{{eid}}/revert"): openapi.Doc(
        "Roll the champion alone back out", "admin", ExperimentDoc, 200, RevertBody),
})  # fmt: skip


class ExperimentRoutes:
    """The routes over one :class:`~edgeloop.control.app.Api`; creates its table."""

    def __init__(self, api: Api) -> None:
        self.api = api
        store.create_table(api.plane.db)

    def routes(self) -> list[tuple[str, Endpoint, str, Body]]:
        return [
            (V1, self.start, "POST", Body.JSON),
            (V1, self.listing, "GET", Body.NONE),
            (f"{V1}/{{eid}}", self.status, "GET", Body.NONE),
            (f"{V1}/{{eid}}/promote", self.promote, "POST", Body.JSON),
            (f"{V1}/{{eid}}/revert", self.revert, "POST", Body.JSON),
        ]

    async def start(self, request: Request) -> Response:
        await self.api.admin(request)
        body = schemas.parse(ExperimentBody, await request.body())
        req = experiments.StartRequest(
            name=body.name, model=body.model, champion=body.champion,
            challenger=body.challenger, split=body.split, metric=body.metric,
            nodes=body.nodes, labels=_labels(body), alpha=body.alpha,
            min_effect=body.min_effect, horizon_per_arm=body.horizon_per_arm,
            latency_threshold_ms=body.latency_threshold_ms,
            plan=body.plan.model_dump() if body.plan else {},
            guardrails=body.guardrails or {}, mixing=body.mixing, shadow=body.shadow,
        )  # fmt: skip
        return json_answer(await run_in_threadpool(experiments.start, self.api.plane, req), 201)

    async def listing(self, request: Request) -> Response:
        await self.api.admin(request)
        found = await run_in_threadpool(experiments.listing, self.api.plane)
        return json_answer({"experiments": found})

    async def status(self, request: Request) -> Response:
        await self.api.admin(request)
        eid = request.path_params["eid"]
        return json_answer(await run_in_threadpool(experiments.status, self.api.plane, eid))

    async def promote(self, request: Request) -> Response:
        await self.api.admin(request)
        raw = await request.body()
        force = schemas.parse(PromoteBody, raw).force if raw.strip() else False
        eid = request.path_params["eid"]
        answer = await run_in_threadpool(experiments.promote, self.api.plane, eid, force)
        return json_answer(answer)

    async def revert(self, request: Request) -> Response:
        await self.api.admin(request)
        raw = await request.body()
        if raw.strip():
            schemas.parse(RevertBody, raw)
        eid = request.path_params["eid"]
        return json_answer(await run_in_threadpool(experiments.revert, self.api.plane, eid))


def _labels(body: ExperimentBody) -> dict[str, str]:
    labels: Any = (body.selector.labels if body.selector else None) or {}
    return {str(k): str(v) for k, v in labels.items()}
