"""One look at a running experiment: the fleet's arms summed, the sequential test updated.

Pure: :func:`look` takes the experiment and its nodes' reports and returns what to store (the
figures, the verdict with its evidence) and the tests' new state. The mSPRT's p-value is valid
at any look (docs/experiments.md), so the control plane looks at every status read and on its
own clock (control/experiment_tick.py); a look whose counts did not change since the last one
leaves the tests as they were.
The first decision other than ``continue`` is kept: looks after it are outside the design.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from typing import Any

from edgeloop.control.experiment_arms import FleetArms, sum_reports
from edgeloop.control.experiment_store import Experiment
from edgeloop.core.errors import DataError
from edgeloop.experiments import (
    BernoulliSummary,
    ContinuousSummary,
    Decision,
    ExperimentConfig,
    ExperimentState,
    Guardrail,
    Metric,
    MetricEvidence,
    Mixing,
    Verdict,
    decide,
)


def config_of(exp: Experiment) -> ExperimentConfig:
    """The statistics' configuration stored with the experiment (``split`` in percent)."""
    return config_from(exp.config, exp.split)


def config_from(c: Mapping[str, Any], split: float) -> ExperimentConfig:
    """The statistics' configuration of a stored config (raises ConfigError for a bad one)."""
    rails = tuple(
        Guardrail(Metric(g["metric"]), float(g["margin"])) for g in c.get("guardrails", ())
    )
    shadow = c.get("mode") == "shadow"  # both arms see every request: the split says nothing
    return ExperimentConfig(
        Metric(c["metric"]),
        int(c["horizon_per_arm"]),
        float(c["min_effect"]),
        50.0 if shadow else split * 100.0,
        float(c["alpha"]),
        guardrails=rails,
        # stored before the mixing was recorded: normal, what it was decided with (new
        # experiments store theirs; their default is control/experiments.DEFAULT_MIXING)
        mixing=Mixing(c.get("mixing", Mixing.NORMAL.value)),
    )


def look(
    exp: Experiment, reports: Iterable[tuple[str, str, Mapping[str, Any] | None]]
) -> tuple[dict[str, Any], ExperimentState]:
    """The look's document and the tests' state after it (see the module docstring)."""
    config = config_of(exp)
    versions = (str(exp.champion), str(exp.challenger))
    before = exp.look or {}
    fleet = sum_reports(exp.experiment_id, versions, reports, before.get("ledger"))
    threshold_s = float(exp.config.get("latency_threshold_ms", 100.0)) / 1000.0
    metric = config.metric
    control = fleet.control.summary(metric, threshold_s)
    treatment = fleet.treatment.summary(metric, threshold_s)
    counts = [*_key(control), *_key(treatment), fleet.control.requests, fleet.treatment.requests]
    doc: dict[str, Any] = {
        "at": time.time(),
        "counts": counts,
        "arms": _arms(exp, fleet),
        "by_class": {
            name: {"champion": c.to_dict(), "challenger": t.to_dict()}
            for name, (c, t) in sorted(fleet.by_class.items())
        },
        "nodes": fleet.nodes,
        "ledger": fleet.ledger,
    }
    decided = before.get("verdict") or {}
    if decided.get("decision") not in (None, Decision.CONTINUE.value):
        return {**doc, "verdict": decided, "reason": before.get("reason")}, exp.tests
    if before.get("counts") == counts and "verdict" in before:
        return {**doc, "verdict": before["verdict"], "reason": before.get("reason")}, exp.tests
    by_class = {
        name: (c.summary(metric, threshold_s), t.summary(metric, threshold_s))
        for name, (c, t) in fleet.by_class.items()
        if min(c.summary(metric, threshold_s).count, t.summary(metric, threshold_s).count) > 0
    }
    metrics = [metric, *(g.metric for g in config.guardrails)]
    arms = [
        {m: a.summary(m, threshold_s) for m in metrics} for a in (fleet.control, fleet.treatment)
    ]
    try:
        verdict = decide(config, arms[0], arms[1], exp.tests, by_class)
    except DataError as exc:
        return {**doc, "verdict": None, "reason": exc.message}, exp.tests
    return {**doc, "verdict": verdict_doc(verdict), "reason": None}, verdict.state


def _key(summary: BernoulliSummary | ContinuousSummary) -> list[float]:
    """What identifies a summary's data: a look whose keys did not change decides nothing new."""
    if isinstance(summary, BernoulliSummary):
        return [summary.successes, summary.trials]
    return [summary.count, summary.mean, summary.m2]


def _arms(exp: Experiment, fleet: FleetArms) -> dict[str, Any]:
    return {
        "champion": {"version": exp.champion,
                     "share": 1.0 if exp.config.get("mode") == "shadow" else 1.0 - exp.split,
                     **fleet.control.to_dict()},
        "challenger": {"version": exp.challenger, "share": exp.split,
                       **fleet.treatment.to_dict()},
    }  # fmt: skip


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def evidence_doc(e: MetricEvidence) -> dict[str, Any]:
    return {
        "metric": e.metric.value,
        "champion_n": e.control_n,
        "challenger_n": e.treatment_n,
        "champion_mean": _finite(e.control_mean),
        "challenger_mean": _finite(e.treatment_mean),
        "effect": _finite(e.effect),
        "improvement": _finite(e.improvement),
        "p_value": e.p_value,
        "cs_low": _finite(e.cs_low),
        "cs_high": _finite(e.cs_high),
    }


def verdict_doc(v: Verdict) -> dict[str, Any]:
    """A verdict as stored and shown: the decision and every piece of evidence behind it."""
    return {
        "decision": v.decision.value,
        "primary": evidence_doc(v.primary) if v.primary is not None else None,
        "guardrails": [evidence_doc(g) for g in v.guardrails],
        "tripped": v.tripped.value if v.tripped else None,
        "classes": {c.device_class: evidence_doc(c.evidence) for c in v.classes},
        "losing_classes": list(v.losing_classes),
        "decided_at": time.time() if v.decision is not Decision.CONTINUE else None,
    }
