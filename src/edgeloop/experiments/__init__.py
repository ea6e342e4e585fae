"""Fleet A/B experiments: the statistics, as pure computation (numpy only).

Per-arm sufficient statistics that merge across nodes (arms.py), the always-valid mixture
SPRT of Johari et al. (sequential.py), the experiment's decision with guardrails and a
device-class breakdown (decision.py), and the fixed-horizon z-test it is compared against
(fixed.py). No HTTP, no disk, no torch. See docs/experiments.md.
"""

from edgeloop.experiments.arms import (
    BernoulliSummary,
    ContinuousSummary,
    Summary,
    merge_all,
    merge_by_class,
)
from edgeloop.experiments.decision import (
    ClassEvidence,
    Decision,
    ExperimentConfig,
    ExperimentState,
    Guardrail,
    Metric,
    MetricEvidence,
    Verdict,
    compare,
    decide,
)
from edgeloop.experiments.fixed import sample_size_per_arm, z_critical, z_p_value, z_statistic
from edgeloop.experiments.sequential import (
    TAU_PER_MIN_EFFECT,
    Mixing,
    SequentialState,
    cs_half_width,
    default_tau,
    mixture_log_lr,
    p_value_path,
)

__all__ = [
    "TAU_PER_MIN_EFFECT",
    "BernoulliSummary",
    "ClassEvidence",
    "ContinuousSummary",
    "Decision",
    "ExperimentConfig",
    "ExperimentState",
    "Guardrail",
    "Metric",
    "MetricEvidence",
    "Mixing",
    "SequentialState",
    "Summary",
    "Verdict",
    "compare",
    "cs_half_width",
    "decide",
    "default_tau",
    "merge_all",
    "merge_by_class",
    "mixture_log_lr",
    "p_value_path",
    "sample_size_per_arm",
    "z_critical",
    "z_p_value",
    "z_statistic",
]
