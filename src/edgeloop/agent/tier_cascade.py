"""The parent as the cascade target of the served model (``--parent-cascade``).

The served model changes with every update, so the cascade follows it: after each activation
the inference service's escalator holds exactly one spec, ``served -> PARENT/v2/models/NAME``
(the serving cascade of :mod:`edgeloop.serving.cascade`: rows under the threshold go up, the
small answer stands and the fallback is counted when the parent fails). A model whose first
output is not ``(rows, classes)`` scores is served without a cascade and the reason is shown.
"""

from __future__ import annotations

import logging
from typing import Any

from edgeloop.agent.tier import TierSettings
from edgeloop.core.errors import ConfigError
from edgeloop.serving.cascade import CascadeSpec, Escalator, check_pair
from edgeloop.serving.catalog import Catalog
from edgeloop.serving.parent import ParentTier

log = logging.getLogger(__name__)


class ParentCascade:
    """Keeps ``escalator``'s specs on the served model (see the module docstring)."""

    def __init__(
        self, settings: TierSettings, escalator: Escalator, catalog: Catalog, timeout_s: float
    ) -> None:
        self.settings = settings
        self.escalator = escalator
        self.catalog = catalog
        self.timeout_s = timeout_s
        self.model: str | None = None
        self.reason: str | None = "no model served yet"

    async def follow(self, served: str | None) -> None:
        """Cascade ``served`` (None: nothing served) to the parent, replacing the old spec."""
        url = self.settings.cascade_url(served) if served else None
        threshold = self.settings.cascade_threshold
        spec = None
        if served is not None and url is not None and threshold is not None:
            try:
                self._check(served)
                spec = CascadeSpec(threshold, url=url.rstrip("/") + "/infer")
                self.reason = None
            except ConfigError as exc:
                self.reason = exc.message
                log.warning("no parent cascade for %s: %s", served, exc.message)
        kept = next(
            (p for p in self.escalator.parents.values() if spec is not None and p.url == spec.url),
            None,
        )
        specs: dict[str, CascadeSpec] = {}
        parents: dict[str, ParentTier] = {}
        if spec is not None and served is not None:
            parents[served] = kept or ParentTier(str(spec.url), self.timeout_s)
            specs[served] = spec
        for parent in self.escalator.replace(specs, parents).values():
            await parent.close()
        self.model = served if spec is not None else None

    def _check(self, served: str) -> None:
        model = self.catalog.model(served)
        version = model.versions[model.latest or ""] if model.latest else None
        if version is None:
            raise ConfigError(f"model {served!r} has no ready version to cascade")
        check_pair(served, None, (version.inputs, version.outputs))

    def status(self, metrics: Any) -> dict[str, Any]:
        """The spec and the serving cascade's counters of the served model."""
        spec = self.escalator.specs.get(self.model or "")
        counts = _cascade_counts(metrics, self.model) if self.model else {}
        return {
            "model": self.model,
            "url": spec.url if spec else None,
            "threshold": spec.threshold if spec else self.settings.cascade_threshold,
            "not_cascaded_because": self.reason,
            **counts,
        }


def _cascade_counts(metrics: Any, model: str) -> dict[str, Any]:
    """The serving cascade's counters of ``model`` (``edgeloop_cascade_*``) as numbers."""

    def samples(counter: Any) -> list[Any]:
        return [
            s
            for family in counter.collect()
            for s in family.samples
            if s.name.endswith("_total") and s.labels.get("model") == model
        ]

    fallbacks: dict[str, int] = {}
    for s in samples(metrics.fallbacks):
        fallbacks[s.labels["error"]] = fallbacks.get(s.labels["error"], 0) + int(s.value)
    calls = sum(int(s.value) for s in samples(metrics.cascade_calls))
    return {
        "escalated_rows": sum(int(s.value) for s in samples(metrics.escalations)),
        "parent_calls": calls,
        "answered_by_parent": calls - sum(fallbacks.values()),
        "fallbacks": sum(fallbacks.values()),
        "fallbacks_by_error": fallbacks,
    }
