"""The fleet-monitoring routes (registered in :mod:`edgeloop.control.app`).

=========================================  =========  ========================================
route                                      auth       answer
=========================================  =========  ========================================
``GET /api/v1/monitoring?model=&version=&node=``  admin  ``{"rows": [...]}`` (monitoring.py)
``GET /api/v1/alerts?state=``              admin      ``{"alerts": [...]}`` (alerts.py)
``GET /metrics``                           admin      the fleet gauges, Prometheus text
=========================================  =========  ========================================
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from edgeloop.control import alert_store, monitoring
from edgeloop.control.alerts import AlertState
from edgeloop.control.answers import json_answer
from edgeloop.control.fleet_metrics import FleetMetrics
from edgeloop.core.errors import ConfigError

if TYPE_CHECKING:
    from edgeloop.control.app import Api


class MonitoringRoutes:
    """The routes over one :class:`~edgeloop.control.app.Api` (its plane and admin check)."""

    def __init__(self, api: Api, metrics: FleetMetrics) -> None:
        self.api = api
        self.metrics = metrics

    async def monitoring(self, request: Request) -> Response:
        await self.api.admin(request)
        filters = monitoring.Filters.from_query(dict(request.query_params))
        rows = await run_in_threadpool(
            self.api.plane.read, "reading fleet monitoring", lambda c: monitoring.read(c, filters)
        )
        return json_answer({"rows": [r.to_dict() for r in rows]})

    async def alerts(self, request: Request) -> Response:
        await self.api.admin(request)
        state = _state(dict(request.query_params))
        found = await run_in_threadpool(
            self.api.plane.read, "reading alerts", lambda c: alert_store.read(c, state)
        )
        return json_answer({"alerts": [a.to_dict() for a in found]})

    async def prometheus(self, request: Request) -> Response:
        await self.api.admin(request)
        text = await run_in_threadpool(self.metrics.render)
        return Response(text, media_type=CONTENT_TYPE_LATEST)


def _state(params: dict[str, str]) -> AlertState | None:
    """``GET /api/v1/alerts``'s query. Raises ConfigError (400) naming the bad field."""
    allowed = [s.value for s in AlertState]
    for key in params:
        if key != "state":
            raise ConfigError(
                f"query field {key!r} is not known; expected 'state'",
                hint=f"e.g. /api/v1/alerts?state=firing (one of {allowed})",
            )
    text = params.get("state")
    if text is None:
        return None
    try:
        return AlertState(text)
    except ValueError:
        raise ConfigError(
            f"query field 'state' is {text[:64]!r}; expected one of {allowed}",
            hint="leave it out for every alert",
        ) from None
