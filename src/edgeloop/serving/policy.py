"""What picks a model's answer: ``GET /v2/models/{m}/policy`` and ``PUT .../power-budget``.

The policy document shows, for the model's serving version, the variant serving now and the
policy that chose it: the load policy's state, or the power policy's budget, decision and
every variant's figure with its basis (``measured`` by a named meter, or ``stated`` by the
device profile), plus the meter (or why there is none) and the model's cascade, if any.
"""

from __future__ import annotations

from typing import Any

import orjson

from edgeloop.core.errors import ConflictError
from edgeloop.serving.cascade import CascadeSpec
from edgeloop.serving.catalog import Catalog
from edgeloop.serving.errors import BadRequestError

_BUDGET_HINT = 'PUT {"watts": 3.5}'


def policy_doc(catalog: Catalog, name: str, cascade: CascadeSpec | None) -> dict[str, Any]:
    """The policy document of model ``name``.

    Raises:
        NotFoundError: the model is not served.
    """
    model = catalog.model(name)
    served = model.versions.get(model.latest or "")
    doc: dict[str, Any] = {
        "model": model.name,
        "version": model.latest,
        "variant": served.pick_variant() if served is not None else None,
        "load": None,
        "power": None,
        "cascade": cascade.to_dict() if cascade is not None else None,
    }
    if served is not None and served.switch is not None:
        doc["load"] = served.switch.stats().to_dict()
    if model.power is not None:
        power = served.power.to_dict() if served is not None and served.power else None
        doc["power"] = {
            "budget_w": model.power.budget_w,
            "meter": catalog.meter,
            "governed": power is not None,  # False: a single variant, nothing to pick
            **(power or {}),
        }
    return doc


def set_power_budget(catalog: Catalog, name: str, body: bytes) -> float:
    """Apply ``{"watts": W}`` to model ``name``'s versions, now and loaded later; return W.

    Raises:
        NotFoundError: the model is not served.
        ConflictError: the model is not under a power budget.
        BadRequestError, ConfigError (both 400): the body is not ``{"watts": positive number}``.
    """
    model = catalog.model(name)
    if model.power is None:
        raise ConflictError(
            f"model {model.name!r} has no power policy",
            hint="start the server with --power-budget-w (and --variant-power figures)",
        )
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequestError(f"the body is not valid JSON: {exc}", hint=_BUDGET_HINT) from exc
    if not isinstance(doc, dict) or "watts" not in doc:
        raise BadRequestError(f"the body {body[:80]!r} has no 'watts'", hint=_BUDGET_HINT)
    governed = [v.power for v in model.versions.values() if v.power is not None]
    return model.power.set_budget(doc["watts"], governed)
