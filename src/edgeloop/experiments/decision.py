"""The decision of a fleet A/B experiment at one look, from the arms' summed statistics.

Pure: the control plane calls :func:`decide` each time node reports arrive, with the
cumulative per-arm summaries and the :class:`ExperimentState` the previous look returned. All
tests are the always-valid mSPRT of sequential.py, so deciding after every look keeps each
test's false positive rate <= alpha (guardrails and device classes are each tested at alpha,
not corrected for their number: a guardrail that stops a harmful treatment early errs safe).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from edgeloop.core.errors import ConfigError, DataError
from edgeloop.experiments.arms import Summary
from edgeloop.experiments.sequential import (
    Mixing,
    SequentialState,
    check_alpha,
    check_tau,
    default_tau,
    difference_variance,
)

# Below two observations an arm has no sample variance; the test waits for more.
MIN_SAMPLES = 2
# A zero plug-in variance (every value equal) would divide by zero in Lambda_n.
_VAR_FLOOR = 1e-18


class Metric(StrEnum):
    """What an experiment compares; each knows which direction is better."""

    ACCURACY = "accuracy"
    ERROR_RATE = "error_rate"
    # Tested as a Bernoulli summary of requests slower than a fixed threshold (the tail share),
    # or as mean latency when nodes report a continuous summary.
    LATENCY_P99 = "latency_p99"
    CONFIDENCE = "confidence"

    @property
    def higher_is_better(self) -> bool:
        return self in (Metric.ACCURACY, Metric.CONFIDENCE)


class Decision(StrEnum):
    """The outcome of one look."""

    CONTINUE = "continue"
    PROMOTE_TREATMENT = "promote_treatment"
    KEEP_CONTROL = "keep_control"
    STOPPED_BY_GUARDRAIL = "stopped_by_guardrail"
    INCONCLUSIVE_AT_HORIZON = "inconclusive_at_horizon"


@dataclass(frozen=True, slots=True)
class Guardrail:
    """The treatment may not make ``metric`` worse by more than ``margin`` (metric units)."""

    metric: Metric
    margin: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.margin) and self.margin >= 0):
            raise ConfigError(
                f"guardrail margin {self.margin} on {self.metric} is not a number >= 0",
                hint="the margin is how much worse the treatment may be, e.g. 0.01 (1 pp)",
            )


@dataclass(frozen=True, slots=True)
class ExperimentConfig:
    """The parameters fixed when an experiment starts; ``split`` is the treatment's % share."""

    metric: Metric
    horizon_per_arm: int
    min_effect: float = 0.02
    split: float = 50.0
    alpha: float = 0.05
    tau: float | None = None
    guardrails: tuple[Guardrail, ...] = ()
    # The primary test's mixing, for its p-value and its confidence sequence alike (the
    # interval inverts the same test, so a decision never shows one holding the null effect);
    # guardrails and device classes always use the normal one, which also detects harms far
    # from min_effect.
    mixing: Mixing = Mixing.NORMAL

    def __post_init__(self) -> None:
        if not (math.isfinite(self.split) and 0.0 < self.split < 100.0):
            raise ConfigError(
                f"split {self.split} is outside 0-100 (both ends excluded)",
                hint="split is the treatment's percentage of traffic, e.g. 50; both arms need some",
            )
        check_alpha(self.alpha)
        if self.horizon_per_arm < MIN_SAMPLES:
            raise ConfigError(
                f"horizon {self.horizon_per_arm} per arm is below {MIN_SAMPLES}",
                hint="the horizon is the most samples per arm before giving up",
            )
        if any(g.metric == self.metric for g in self.guardrails):
            raise ConfigError(
                f"{self.metric} is both the metric and a guardrail",
                hint="a guardrail watches another metric (e.g. latency_p99 for accuracy)",
            )
        default_tau(self.min_effect)  # validates min_effect
        if self.tau is not None:
            check_tau(self.tau)

    def mixing_tau(self, mixing: Mixing = Mixing.NORMAL) -> float:
        return self.tau if self.tau is not None else default_tau(self.min_effect, mixing)


@dataclass(frozen=True, slots=True)
class MetricEvidence:
    """One always-valid comparison: effect = treatment mean - control mean (metric units)."""

    metric: Metric
    control_n: int
    treatment_n: int
    control_mean: float
    treatment_mean: float
    effect: float
    p_value: float
    cs_low: float
    cs_high: float
    null_effect: float = 0.0

    @property
    def higher_is_better(self) -> bool:
        return self.metric.higher_is_better

    @property
    def improvement(self) -> float:
        """The effect signed so that > 0 means the treatment is better."""
        return self.effect if self.higher_is_better else -self.effect

    def worse_beyond(self, margin: float) -> bool:
        """The confidence sequence lies wholly on the side where the treatment is worse by
        more than ``margin``: the always-valid rejection of "worse by at most margin"."""
        return self.cs_high < -margin if self.higher_is_better else self.cs_low > margin

    @property
    def significant_loss(self) -> bool:
        return self.worse_beyond(0.0)


@dataclass(frozen=True, slots=True)
class ClassEvidence:
    """The primary metric within one device class; flagged when it loses there."""

    device_class: str
    evidence: MetricEvidence

    @property
    def loses(self) -> bool:
        return self.evidence.improvement < 0


@dataclass(frozen=True, slots=True)
class ExperimentState:
    """The sequential tests' memory between looks, keyed by test name."""

    tests: Mapping[str, SequentialState] = field(default_factory=dict)

    def get(self, key: str) -> SequentialState:
        return self.tests.get(key, SequentialState())


@dataclass(frozen=True, slots=True)
class Verdict:
    """The decision of one look with all the evidence behind it."""

    decision: Decision
    primary: MetricEvidence | None
    guardrails: tuple[MetricEvidence, ...]
    tripped: Metric | None
    classes: tuple[ClassEvidence, ...]
    state: ExperimentState

    @property
    def losing_classes(self) -> tuple[str, ...]:
        """Device classes where the treatment loses although it wins fleet-wide."""
        if self.primary is None or self.primary.improvement <= 0:
            return ()
        return tuple(c.device_class for c in self.classes if c.loses)


def _check_arm(metric: Metric, arm: str, summary: Summary | None) -> Summary:
    if summary is None or summary.count == 0:
        raise DataError(
            f"the {arm} arm has no {metric} observations",
            hint="decide once both arms have reported; an empty arm gets no traffic or feedback",
        )
    return summary


def compare(
    metric: Metric,
    control: Summary,
    treatment: Summary,
    prior: SequentialState,
    config: ExperimentConfig,
    null_effect: float = 0.0,
    mixing: Mixing = Mixing.NORMAL,
) -> tuple[MetricEvidence | None, SequentialState]:
    """One look of the mSPRT on treatment - control, its p-value and confidence sequence both
    from ``mixing``'s test; None while an arm has < MIN_SAMPLES."""
    if min(control.count, treatment.count) < MIN_SAMPLES:
        return None, prior
    effect = treatment.mean - control.mean
    var = difference_variance(treatment.variance, treatment.count, control.variance, control.count)
    tau = config.mixing_tau(mixing)
    state = prior.update(effect, max(var, _VAR_FLOOR), tau, config.alpha, null_effect, mixing)
    evidence = MetricEvidence(
        metric,
        control.count,
        treatment.count,
        control.mean,
        treatment.mean,
        effect,
        state.p_value,
        state.low,
        state.high,
        null_effect,
    )
    return evidence, state


def _guardrails(
    config: ExperimentConfig,
    control: Mapping[Metric, Summary],
    treatment: Mapping[Metric, Summary],
    state: ExperimentState,
    tests: dict[str, SequentialState],
) -> tuple[tuple[MetricEvidence, ...], Metric | None]:
    found: list[MetricEvidence] = []
    tripped: Metric | None = None
    for rail in config.guardrails:
        c = _check_arm(rail.metric, "control", control.get(rail.metric))
        t = _check_arm(rail.metric, "treatment", treatment.get(rail.metric))
        null = -rail.margin if rail.metric.higher_is_better else rail.margin
        key = f"guardrail:{rail.metric}"
        evidence, tests[key] = compare(rail.metric, c, t, state.get(key), config, null)
        if evidence is not None:
            found.append(evidence)
            if tripped is None and evidence.worse_beyond(rail.margin):
                tripped = rail.metric
    return tuple(found), tripped


def _classes(
    config: ExperimentConfig,
    by_class: Mapping[str, tuple[Summary, Summary]],
    state: ExperimentState,
    tests: dict[str, SequentialState],
) -> tuple[ClassEvidence, ...]:
    found: list[ClassEvidence] = []
    for name, (c, t) in sorted(by_class.items()):
        key = f"class:{name}"
        evidence, tests[key] = compare(config.metric, c, t, state.get(key), config)
        if evidence is not None:
            found.append(ClassEvidence(name, evidence))
    return tuple(found)


def _outcome(config: ExperimentConfig, primary: MetricEvidence | None) -> Decision:
    if primary is None:
        return Decision.CONTINUE
    if primary.p_value <= config.alpha:
        return Decision.PROMOTE_TREATMENT if primary.improvement > 0 else Decision.KEEP_CONTROL
    if min(primary.control_n, primary.treatment_n) >= config.horizon_per_arm:
        return Decision.INCONCLUSIVE_AT_HORIZON
    return Decision.CONTINUE


def decide(
    config: ExperimentConfig,
    control: Mapping[Metric, Summary],
    treatment: Mapping[Metric, Summary],
    state: ExperimentState | None = None,
    by_class: Mapping[str, tuple[Summary, Summary]] | None = None,
) -> Verdict:
    """The decision at this look from cumulative fleet-wide summaries per arm and metric.

    ``by_class`` maps a device class to its (control, treatment) summaries of the primary
    metric. Guardrails are checked first: one whose confidence sequence shows the treatment
    worse by more than its margin stops the experiment. The first decision other than
    CONTINUE ends the experiment (its direction is the estimate's at that look); looks after it
    are outside the design. Raises DataError when an arm has no observation of the metric or
    of a guardrail metric.
    """
    prior = state or ExperimentState()
    c = _check_arm(config.metric, "control", control.get(config.metric))
    t = _check_arm(config.metric, "treatment", treatment.get(config.metric))
    tests: dict[str, SequentialState] = dict(prior.tests)
    primary, tests["primary"] = compare(
        config.metric, c, t, prior.get("primary"), config, mixing=config.mixing
    )
    rails, tripped = _guardrails(config, control, treatment, prior, tests)
    classes = _classes(config, by_class or {}, prior, tests)
    decision = Decision.STOPPED_BY_GUARDRAIL if tripped else _outcome(config, primary)
    return Verdict(decision, primary, rails, tripped, classes, ExperimentState(tests))
