"""``POST /api/v1/datasets/captures`` (admin): captured samples -> a stored data set version.

Body (:class:`CaptureDatasetBody`)::

    {"model": "digits-cnn", "name": "digits-captures", "version": "3",
     "since": "2026-12-07T00:00:00Z", "until": "...", "nodes": ["..."], "reasons": ["uncertain"]}

Answers 201 with the new version (``to_dict`` of :class:`DatasetVersion`, provenance included)
and ``"captured"`` (counts by reason and node, the model versions); 409 when the name already
holds exactly these samples (the message names that version: a version is immutable); 422 when
nothing matches or the rows cannot form one data set; 400 for a malformed body.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from edgeloop.control import captures
from edgeloop.control.answers import json_answer
from edgeloop.control.schemas import NAME, parse
from edgeloop.control.telemetry import _instant
from edgeloop.core.errors import ConfigError, EdgeError
from edgeloop.core.types import ModelRef
from edgeloop.serving.capture import Reason

if TYPE_CHECKING:
    from edgeloop.control.app import Api

PATH = "/api/v1/datasets/captures"
Text = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class CaptureDatasetBody(BaseModel):
    """``POST /api/v1/datasets/captures``."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    model: Annotated[str, StringConstraints(pattern=NAME)]
    name: Annotated[str, StringConstraints(pattern=NAME)]
    version: Annotated[str, StringConstraints(pattern=r"^[1-9][0-9]{0,8}$")] | None = None
    since: Text | None = None
    until: Text | None = None
    nodes: Annotated[list[Text], Field(max_length=1000)] = []
    reasons: Annotated[list[Text], Field(max_length=4)] = []


class CaptureRoutes:
    """The route over one :class:`~edgeloop.control.app.Api` (its plane and admin check)."""

    def __init__(self, api: Api) -> None:
        self.api = api

    async def make_dataset(self, request: Request) -> Response:
        await self.api.admin(request)
        body = parse(CaptureDatasetBody, await request.body())
        query = to_query(body)
        made = await run_in_threadpool(self._make, query, body.name)
        return json_answer(made, status=201)

    def _make(self, query: captures.CaptureQuery, name: str) -> dict[str, Any]:
        from edgeloop.registry.dataset_library import DatasetLibrary

        plane = self.api.plane
        found, labels = plane.read(
            f"reading the captures of {query.model}", lambda c: captures.read(c, query)
        )
        width = captures.output_width(found)
        assembled = captures.assemble(query, found, labels, self._classes(query, width))
        with DatasetLibrary.open(plane.settings) as library:
            version = library.add(name, assembled.samples, assembled.provenance)
        return {**version.to_dict(), "captured": assembled.to_dict()}

    def _classes(self, query: captures.CaptureQuery, width: int | None) -> tuple[str, ...]:
        """The class names in the registry's manifest of the captured version, if any."""
        try:
            ref = ModelRef(query.model, int(query.version) if query.version else None)
            labels = self.api.plane.registry.show(ref).manifest.labels
        except EdgeError:  # a model served from outside the registry: numbered classes
            labels = ()
        return captures.class_names(tuple(labels), width)


def to_query(body: CaptureDatasetBody) -> captures.CaptureQuery:
    """The body as a query. Raises ConfigError (400) naming a bad time or reason."""
    known = {r.value for r in Reason}
    bad = sorted(set(body.reasons) - known)
    if bad:
        raise ConfigError(
            f"reasons {bad} are not capture reasons; known: {', '.join(sorted(known))}"
        )
    try:
        since = _instant(body.since, "since") if body.since else None
        until = _instant(body.until, "until") if body.until else None
    except ValueError as exc:
        raise ConfigError(str(exc), hint="write RFC 3339 times, e.g. 2026-12-07T00:00:00Z") from exc
    return captures.CaptureQuery(
        body.model, body.version, tuple(body.nodes), tuple(body.reasons), since, until
    )
