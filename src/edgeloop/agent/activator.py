"""The bridge from the updater's slots to the inference server's catalog (hot swap).

A deployment's ``serving`` object sets the batching of the model it ships: ``max_batch``,
``max_delay_ms``, ``threads`` (ONNX Runtime intra-op threads), ``engine`` and ``capture`` (the
capture policy, :mod:`edgeloop.serving.capture`) are applied to the
versions loaded from then on; other keys are not applied by this agent (logged, and named in the
activation event). Without a ``serving.engine`` the engine ``edgeloop tune`` recorded as the
fastest for the model (its manifest's ``recipe.engine``) is used when installed here.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from edgeloop.agent.slots import SlotModel
from edgeloop.core.errors import ConfigError
from edgeloop.serving.capture import CaptureSpec
from edgeloop.serving.catalog import Catalog
from edgeloop.serving.config import ServerConfig
from edgeloop.serving.repository import Origin
from edgeloop.serving.served import VersionState

log = logging.getLogger(__name__)
APPLIED = ("max_batch", "max_delay_ms", "threads", "engine", "capture")


def serving_config(base: ServerConfig, document: bytes) -> tuple[ServerConfig, list[str]]:
    """``base`` with the document's ``serving`` keys applied; the keys left unapplied.

    Raises:
        ConfigError: a value the server refuses (the message names it).
    """
    try:
        doc: Any = json.loads(document)
        serving: Any = doc.get("serving") or {}
    except (ValueError, AttributeError):
        doc, serving = {}, {}
    if not isinstance(serving, dict):
        raise ConfigError(f"deployment serving is {str(serving)[:60]!r}, expected an object")
    applied = {k: serving[k] for k in APPLIED if k in serving}
    if applied.get("capture") is not None:  # serving/capture.py; ConfigError names a bad value
        applied["capture"] = CaptureSpec.from_json(applied["capture"])
    if "engine" not in applied and (tuned := _tuned_engine(doc)) is not None:
        applied["engine"] = tuned
    try:
        config = replace(base, **applied)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"deployment serving {applied} is not valid: {exc}") from exc
    return config, sorted(set(serving) - set(APPLIED) - {"experiment"})  # agent/experiment.py


def _tuned_engine(doc: Any) -> str | None:
    """The engine the shipped model's manifest names as its fastest (``recipe.engine``)."""
    try:
        engine = doc["models"][0]["manifest"]["recipe"]["engine"]
    except (KeyError, IndexError, TypeError):
        return None
    return engine if isinstance(engine, str) else None


class CatalogActivator:
    """Serves one slot's model through ``catalog``; other model names are removed after.

    ``follow`` is told the served model's name after each swap (the parent cascade follows the
    served model, :mod:`edgeloop.agent.tier_cascade`).
    """

    def __init__(
        self,
        catalog: Catalog,
        base: ServerConfig,
        follow: Callable[[str | None], Awaitable[None]] | None = None,
    ) -> None:
        self.catalog = catalog
        self.base = base
        self.follow = follow

    async def show(self, model: SlotModel | None) -> None:
        """Hot-swap to ``model`` (loaded before it answers; old requests finish), or serve none.

        Raises:
            ConfigError: the model's serving settings are invalid.
            What loading raises; the model served before keeps serving.
        """
        if model is not None:
            config, ignored = serving_config(self.base, model.document)
            if ignored:
                log.warning("serving keys not applied by this agent: %s", ", ".join(ignored))
            previous, self.catalog.config = self.catalog.config, config
            try:
                await self.catalog.place(Origin(model.name, model.folder))
            except BaseException:
                self.catalog.config = previous
                raise
        keep = {model.name} if model is not None else set()
        if self.follow is not None:
            await self.follow(model.name if model is not None else None)
        for name in [n for n in self.catalog.models if n not in keep]:
            await self.catalog.remove(name)

    async def repair(self, model: SlotModel) -> bool:
        """Serve ``model`` again if the server lost it (its version is not loaded, or failed);
        not while it loads or the server stops. Whether it had to.

        Raises:
            What :meth:`show` raises.
        """
        if self.catalog.stopping:
            return False
        served = self.catalog.models.get(model.name)
        version = served.versions.get(str(model.version)) if served is not None else None
        if version is not None and version.state in (VersionState.READY, VersionState.LOADING):
            return False
        await self.show(model)
        return True


def serving_state(catalog: Catalog, model: SlotModel) -> dict[str, Any]:
    """Whether the server really answers with ``model``: the report's ``active.serving``
    (true only when its version is READY in the catalog) and ``active.serving_state``.

    What the node reports must come from the server, not from the slot pointer: the pointer
    says what *should* serve, and a model can be missing from the server (a failed load, a
    bug) while the pointer still names it (issue 17 item 1).
    """
    if catalog.stopping:
        return {"serving": False, "serving_state": "the server is stopping"}
    served = catalog.models.get(model.name)
    if served is None:
        return {"serving": False, "serving_state": f"model {model.name!r} is not loaded"}
    version = served.versions.get(str(model.version))
    if version is None:
        ready = served.latest
        what = f"version {ready} serves instead" if ready else "no version is loaded"
        return {"serving": False, "serving_state": f"version {model.version} not loaded; {what}"}
    return {"serving": version.state is VersionState.READY, "serving_state": version.state.value}
