"""Fleet A/B experiments from Python: the calls :class:`~edgeloop.sdk.manager.EdgeMLManager`
offers over ``/api/v1/experiments`` (control/experiments.py), with typed results.

    exp = edge.start_experiment("lin", champion=1, challenger=2, split=30)  # percent
    status = edge.experiment_status(exp.experiment_id)
    status.decision, status.p_value, status["challenger_arm"]["accuracy"]
    if status.decision == "promote_treatment":
        edge.promote_experiment(exp.experiment_id)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from edgeloop.core.errors import ConfigError
from edgeloop.core.types import ModelRef
from edgeloop.sdk.control_client import ControlClient
from edgeloop.sdk.results import Keyed


@dataclass(frozen=True, slots=True)
class ArmFigures(Keyed):
    """One arm summed over the experiment's nodes (None: nothing measured yet)."""

    version: int
    share: float  # percent of the traffic this arm gets
    requests: int
    errors: int
    error_rate: float | None
    latency_mean_ms: float | None
    latency_p99_ms: float | None  # the histogram bound at the 99th percentile's rank
    labelled: int
    correct: int
    accuracy: float | None  # correct / labelled rows (ground truth from the labels path)
    confidence_rows: int = 0  # rows answered with class scores
    confidence_mean: float | None = None  # their mean top-1 probability (not correctness)


@dataclass(frozen=True, slots=True)
class ExperimentResult(Keyed):
    """An experiment as the control plane sees it now, with the sequential test's evidence
    (``p_value`` always valid, confidence sequence ``cs_low..cs_high`` on challenger minus
    champion; None until both arms have observations)."""

    experiment_id: str
    name: str
    model: str
    champion: int
    challenger: int
    split: float  # percent of the traffic the challenger gets (the API's share x 100)
    metric: str
    state: str
    decision: str | None
    p_value: float | None
    effect: float | None
    cs_low: float | None
    cs_high: float | None
    champion_arm: ArmFigures | None
    challenger_arm: ArmFigures | None
    waiting_for: str | None  # why there is no decision yet, when that is known
    rollout_id: str | None
    raw: Mapping[str, Any] = field(repr=False, default_factory=dict)  # the API's answer
    # set when the metric is a proxy (confidence): "proxy metric: confidence is not correctness..."
    caveat: str | None = None


def _arm(doc: Any) -> ArmFigures | None:
    if not isinstance(doc, Mapping):
        return None

    def opt(key: str) -> float | None:
        value = doc.get(key)
        return float(value) if isinstance(value, int | float) else None

    return ArmFigures(
        int(doc["version"]), float(doc["share"]) * 100.0, int(doc.get("requests") or 0),
        int(doc.get("errors") or 0), opt("error_rate"), opt("latency_mean_ms"),
        opt("latency_p99_ms"), int(doc.get("labelled") or 0), int(doc.get("correct") or 0),
        opt("accuracy"), int(doc.get("confidence_rows") or 0), opt("confidence_mean"),
    )  # fmt: skip


def experiment_result(doc: Mapping[str, Any]) -> ExperimentResult:
    """The API's experiment document as a typed result."""
    primary = (doc.get("evidence") or {}).get("primary") or {}
    arms = doc.get("arms") or {}
    return ExperimentResult(
        doc["experiment_id"], doc["name"], doc["model"], int(doc["champion"]),
        int(doc["challenger"]), float(doc["split"]) * 100.0, doc["metric"], doc["state"],
        doc.get("decision"), primary.get("p_value"), primary.get("effect"),
        primary.get("cs_low"), primary.get("cs_high"), _arm(arms.get("champion")),
        _arm(arms.get("challenger")), doc.get("waiting_for"), doc.get("rollout_id"), dict(doc),
        doc.get("caveat"),
    )  # fmt: skip


def share_of(percent: float, name: str = "split") -> float:
    """The API's share (a fraction) of a split given in percent, strictly inside 0..100.

    Raises:
        ConfigError: not a number strictly between 0 and 100.
    """
    if isinstance(percent, bool) or not isinstance(percent, int | float):
        raise ConfigError(
            f"{name} {percent!r} is not a number",
            hint="the percent of the traffic the challenger gets, e.g. 50",
        )
    if not (math.isfinite(percent) and 0 < percent < 100):
        raise ConfigError(
            f"{name} {percent:g} is outside 0-100 (percent of the traffic the challenger gets, "
            "both ends excluded)",
            hint="e.g. 50 for half, 10 for a tenth; 0 or 100 would leave one arm without traffic",
        )
    return float(percent) / 100.0


def _version(model: str, value: int | str, role: str) -> int:
    if isinstance(value, int):
        return value
    ref = ModelRef.parse(value)
    if ref.name != model or ref.version is None:
        raise ConfigError(
            f"{role} {value!r} is not a version of {model!r}",
            hint=f"give a version number or '{model}:VERSION'",
        )
    return ref.version


class ExperimentCalls:
    """The experiment calls; the class using it has a :class:`ControlClient` as ``control``."""

    control: ControlClient

    def start_experiment(
        self,
        model_id: str,
        champion: int | str,
        challenger: int | str,
        split: float | None = None,
        metric: str = "accuracy",
        nodes: Sequence[str] | None = None,
        name: str | None = None,
        shadow: bool = False,
        **options: Any,
    ) -> ExperimentResult:
        """Start serving ``challenger`` beside ``champion`` on ``nodes`` (names or ids; None:
        every node), the challenger taking ``split`` percent (0..100, both ends excluded; 50 when
        not given) of the traffic; with ``shadow`` it gets a copy of every request instead
        (answering nobody; no split, and no accuracy). ``metric``: accuracy, error_rate,
        latency_p99 or confidence (the mean top-1 probability: a proxy, the result then carries
        a ``caveat``). ``options``: the API's ``alpha``, ``min_effect``, ``horizon_per_arm``,
        ``latency_threshold_ms``, ``selector``, ``plan``, ``guardrails`` (metric -> margin),
        ``mixing`` (``"two_point"`` when left out, the control plane's default; or
        ``"normal"``).

        Raises:
            ConfigError: a bad split or metric; NotFoundError: an unknown model, version or
            node; ConflictError: another experiment on the model, different inputs, an offline
            or busy node (as the control plane answers them).
        """
        body: dict[str, Any] = {
            "name": name or f"{model_id}-ab",
            "model": model_id,
            "champion": _version(model_id, champion, "champion"),
            "challenger": _version(model_id, challenger, "challenger"),
            "metric": metric,
            **options,
        }
        if shadow:
            body["shadow"] = True
            if split is not None:
                body["split"] = share_of(split)  # refused: a shadow takes no split
        else:
            body["split"] = share_of(50.0 if split is None else split)
        if nodes is not None:
            body["nodes"] = list(nodes)
        return experiment_result(self.control.call("POST", "/api/v1/experiments", json=body))

    def experiment_status(self, experiment_id: str) -> ExperimentResult:
        """Per-arm figures and the decision at a fresh look. Raises NotFoundError."""
        return experiment_result(self.control.call("GET", f"/api/v1/experiments/{experiment_id}"))

    def promote_experiment(self, experiment_id: str, force: bool = False) -> ExperimentResult:
        """Roll the challenger out through the guarded rollout (ConflictError unless the
        decision is ``promote_treatment`` or ``force``)."""
        path = f"/api/v1/experiments/{experiment_id}/promote"
        return experiment_result(self.control.call("POST", path, json={"force": force}))

    def revert_experiment(self, experiment_id: str) -> ExperimentResult:
        """Roll the champion alone back out (the experiment ends)."""
        path = f"/api/v1/experiments/{experiment_id}/revert"
        return experiment_result(self.control.call("POST", path, json={}))

    def list_experiments(self) -> list[ExperimentResult]:
        rows = self.control.call("GET", "/api/v1/experiments")["experiments"]
        return [experiment_result(r) for r in rows]
