"""Hierarchical tiers: a node's parent (``--parent``) and a parent's service to its children.

- ``--parent URL``: artifact targets are fetched from the parent's tier cache first, the control
  plane after (:mod:`edgeloop.agent.fetcher`, :mod:`edgeloop.agent.tuf_client`).
- ``--parent-cascade [MODEL@]THRESHOLD``: rows the served model is less sure of than THRESHOLD
  go to ``URL/v2/models/MODEL`` (default: the served model's own name) through the serving
  cascade; the child's answer stands when the parent fails (:mod:`edgeloop.agent.tier_cascade`).
- ``--serve-children``: this node serves ``GET /tier/targets/{path}`` from its cache
  (:mod:`edgeloop.agent.tier_cache`) to nodes the control plane vouches for
  (:mod:`edgeloop.agent.tier_auth`).

The counts are on ``GET /agent/status`` -> ``tier`` and on ``GET /metrics``
(``edgeloop_tier_*``; the cascade's own ``edgeloop_cascade_*``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from starlette.requests import Request
from starlette.responses import FileResponse, Response

from edgeloop.agent.fetcher import NODE_HEADER, FetchSources
from edgeloop.agent.tier_auth import ChildAuth, ChildRefusedError
from edgeloop.agent.tier_cache import TierCache, check_path
from edgeloop.core.errors import ConfigError, EdgeError
from edgeloop.core.types import ModelRef
from edgeloop.serving.errors import error_response

_CASCADE_HINT = "write --parent-cascade 0.8 or --parent-cascade big@0.8 (with --parent URL)"


@dataclass(frozen=True, slots=True)
class TierSettings:
    """A node's place in the tiers; the defaults are a node with no parent and no children."""

    parent: str | None = None
    cascade_threshold: float | None = None
    cascade_model: str | None = None
    serve_children: bool = False
    cache_mb: float = 2048.0

    def __post_init__(self) -> None:
        if self.parent is not None:
            parts = urlsplit(self.parent)
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
                raise ConfigError(
                    f"--parent {self.parent!r} is not an http(s) URL of a parent agent",
                    hint="e.g. --parent http://gateway.local:8000 (the parent's --port)",
                )
        if self.cascade_threshold is not None:
            if self.parent is None:
                raise ConfigError("--parent-cascade needs --parent URL", hint=_CASCADE_HINT)
            if not (math.isfinite(self.cascade_threshold) and 0 <= self.cascade_threshold <= 1):
                raise ConfigError(
                    f"--parent-cascade threshold {self.cascade_threshold} is outside [0, 1]",
                    hint=_CASCADE_HINT,
                )
        if not self.cache_mb > 0:
            raise ConfigError(f"--tier-cache-mb {self.cache_mb} must be > 0")

    @classmethod
    def parse(
        cls, parent: str | None, cascade: str | None, serve_children: bool, cache_mb: float
    ) -> TierSettings:
        """From the CLI's values; ``cascade`` is ``[MODEL@]THRESHOLD``.

        Raises:
            ConfigError: a parent that is not an http(s) URL, a cascade without a parent, a
                threshold that is not a number in [0, 1], a bad model name.
        """
        threshold = model = None
        if cascade is not None:
            name, _, raw = cascade.rpartition("@")
            try:
                threshold = float(raw)
            except ValueError:
                raise ConfigError(
                    f"--parent-cascade {cascade!r}: {raw!r} is not a threshold in [0, 1]",
                    hint=_CASCADE_HINT,
                ) from None
            model = ModelRef(name.strip()).name if name.strip() else None
        url = parent.rstrip("/") if parent else None
        return cls(url, threshold, model, serve_children, cache_mb)

    def cascade_url(self, served: str) -> str | None:
        """The parent's v2 model that ``served``'s unsure rows go to; None: no cascade."""
        if self.parent is None or self.cascade_threshold is None:
            return None
        return f"{self.parent}/v2/models/{self.cascade_model or served}"


class ChildService:
    """``GET /tier/targets/{path}``: the cache, behind the children's authentication."""

    def __init__(self, cache: TierCache, auth: ChildAuth) -> None:
        self.cache = cache
        self.auth = auth

    async def target(self, request: Request) -> Response:
        path = str(request.path_params["path"])
        try:
            check_path(path)  # a bad path costs no call to the control plane
            await self.auth.check(
                request.headers.get("authorization"), request.headers.get(NODE_HEADER)
            )
            file = await self.cache.get(path)
        except EdgeError as exc:
            if isinstance(exc, ConfigError | ChildRefusedError):
                self.cache.counts.refused += 1
            return error_response(exc)
        self.cache.counts.served += 1
        return FileResponse(file, media_type="application/octet-stream")  # honours Range

    def status(self) -> dict[str, Any]:
        return {"cache": self.cache.status(), "auth": self.auth.status()}


class TierCollector:
    """``edgeloop_tier_*`` on ``GET /metrics``: artifact sources and the cache's counts."""

    def __init__(self, sources: FetchSources, children: ChildService | None) -> None:
        self.sources = sources
        self.children = children

    def collect(self) -> Iterable[Metric]:
        fetches = CounterMetricFamily(
            "edgeloop_tier_artifact_fetches",
            "Artifacts this node downloaded, by source (parent, control).",
            labels=["source"],
        )
        fetches.add_metric(["parent"], self.sources.parent)
        fetches.add_metric(["control"], self.sources.control)
        yield fetches
        failures = CounterMetricFamily(
            "edgeloop_tier_parent_failures",
            "Artifact fetches from the parent that fell back, by kind (failed, rejected).",
            labels=["kind"],
        )
        failures.add_metric(["failed"], self.sources.parent_failed)
        failures.add_metric(["rejected"], self.sources.parent_rejected)
        yield failures
        if self.children is None:
            return
        counts = self.children.cache.counts.to_dict()
        cache = CounterMetricFamily(
            "edgeloop_tier_cache_events",
            "What the tier cache did for children, by event.",
            labels=["event"],
        )
        for event in (k for k in counts if k != "upstream_bytes"):
            cache.add_metric([event], counts[event])
        yield cache
        yield CounterMetricFamily(
            "edgeloop_tier_cache_upstream_bytes",
            "Bytes the tier cache downloaded from the control plane and kept.",
            value=counts["upstream_bytes"],
        )
        status = self.children.cache.status()
        yield GaugeMetricFamily(
            "edgeloop_tier_cache_bytes", "Bytes held in the tier cache.", value=status["bytes"]
        )
