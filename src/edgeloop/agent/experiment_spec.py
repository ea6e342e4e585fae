"""The ``serving.experiment`` block of a deployment document: a fleet A/B experiment's arms.

The control plane deploys the experiment's champion the usual way (``models[0]``, through the
updater's guarded states) and names the challenger here, with the same signed-target fields as a
model entry (target, sha256, length, self-test, profile)::

    "serving": {"experiment": {"id": "exp-...", "model": "lin", "champion": 1,
                               "challenger": {<model entry of version 2>}, "split": 0.3}}

``split`` is the challenger's share of the routed traffic, in (0, 1); instead of it,
``"shadow": true`` has the champion answer every request and the challenger get a copy of
each (its answers reach nobody). The block reaches the agent
inside the signed document, and the challenger's bytes are checked against the signed targets
like the champion's (:mod:`edgeloop.agent.experiment`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from edgeloop.agent.deployment import ModelSpec, parse_model_entry
from edgeloop.core.errors import UntrustedArtifactError

KEY = "experiment"


def _bad(what: str, got: Any, expected: str) -> UntrustedArtifactError:
    return UntrustedArtifactError(
        f"deployment document: serving.experiment.{what} is {str(got)[:80]!r}, expected {expected}",
        hint="the control plane signed a malformed experiment; stop it and start it again",
    )


@dataclass(frozen=True, slots=True)
class ArmSpec:
    """One experiment on this node: the served champion version and the challenger's entry."""

    experiment_id: str
    model: str
    champion: int
    challenger: ModelSpec
    split: float  # 0.0 with ``shadow``
    shadow: bool = False

    @property
    def versions(self) -> tuple[str, str]:
        return (str(self.champion), str(self.challenger.version))


def parse_experiment(document: bytes, model: str, version: int) -> ArmSpec | None:
    """The experiment block of ``document`` (None: none), for the served ``model``:``version``.

    Raises:
        UntrustedArtifactError: a bad field, or arms that do not fit the served model.
    """
    try:
        serving = json.loads(document).get("serving") or {}
    except (ValueError, AttributeError):
        return None
    doc = serving.get(KEY) if isinstance(serving, dict) else None
    if doc is None:
        return None
    if not isinstance(doc, dict):
        raise _bad("", doc, "an object")
    exp_id = doc.get("id")
    if not isinstance(exp_id, str) or not exp_id.replace("-", "").isalnum():
        raise _bad("id", exp_id, "an experiment id (letters, digits, '-')")
    if doc.get("model") != model:
        raise _bad("model", doc.get("model"), f"the served model {model!r}")
    if doc.get("champion") != version:
        raise _bad("champion", doc.get("champion"), f"the served version {version}")
    shadow = doc.get("shadow", False)
    if not isinstance(shadow, bool):
        raise _bad("shadow", shadow, "true or false")
    split = doc.get("split", 0.0 if shadow else None)
    if shadow and split != 0.0:
        raise _bad("split", split, "no split with shadow")
    if isinstance(split, bool) or not isinstance(split, int | float):
        raise _bad("split", split, "a number in (0, 1)")
    if not shadow and not (math.isfinite(split) and 0.0 < split < 1.0):
        raise _bad("split", split, "a number in (0, 1)")
    try:
        challenger = parse_model_entry(doc.get("challenger"))
    except UntrustedArtifactError as exc:
        raise _bad("challenger", doc.get("challenger"), f"a model entry ({exc.message})") from exc
    if challenger.name != model or challenger.version == version:
        raise _bad("challenger", f"{challenger.name}:{challenger.version}",
                   f"another version of {model!r}")  # fmt: skip
    return ArmSpec(exp_id, model, version, challenger, float(split), shadow)
