"""Per-arm counts of a fleet A/B experiment, read from the node's own server.

What a node reports for each arm (a served version of the experiment's model), cumulative since
the experiment was applied here: requests and errors (status >= 500) from the server's
``edgeloop_requests_total``, the latency histogram (count, sum and the cumulative bucket counts)
from ``edgeloop_request_seconds``, labelled / correct rows from the feedback path (the labels
joined to the version that answered, serving/feedback.py), and the top-1 confidence of the rows
answered with class scores: their count, sum and sum of squares (serving/confidence_tally.py;
none for a model with one output value a row). The control plane sums these across nodes into
the sufficient statistics of :mod:`edgeloop.experiments` (control/experiments.py).

The server's counters start at 0 with the process; a baseline taken when the experiment is
applied is subtracted. A counter below its baseline means the process restarted: the baseline
is then 0 (the counts since the restart are reported).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from edgeloop.serving.metrics import LATENCY_BUCKETS, ServerMetrics


@dataclass(frozen=True, slots=True)
class ArmCounts:
    """One arm's cumulative counts (see the module docstring)."""

    requests: int = 0
    errors: int = 0
    latency_count: int = 0
    latency_sum_s: float = 0.0
    # cumulative counts of requests at or below each LATENCY_BUCKETS bound (Prometheus' "le")
    latency_buckets: tuple[int, ...] = (0,) * len(LATENCY_BUCKETS)
    labelled: int = 0
    correct: int = 0
    confidence_count: int = 0  # rows answered with class scores
    confidence_sum: float = 0.0  # of their top-1 probabilities
    confidence_sum_sq: float = 0.0  # of their squares

    def minus(self, base: ArmCounts) -> ArmCounts:
        """These counts since ``base`` (all of them when a counter went below its base)."""
        if (self.requests < base.requests or self.labelled < base.labelled
                or self.confidence_count < base.confidence_count):  # fmt: skip
            return self
        return ArmCounts(
            self.requests - base.requests,
            self.errors - base.errors,
            self.latency_count - base.latency_count,
            self.latency_sum_s - base.latency_sum_s,
            tuple(a - b for a, b in zip(self.latency_buckets, base.latency_buckets, strict=True)),
            self.labelled - base.labelled,
            self.correct - base.correct,
            self.confidence_count - base.confidence_count,
            max(0.0, self.confidence_sum - base.confidence_sum),
            max(0.0, self.confidence_sum_sq - base.confidence_sum_sq),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "latency": {
                "count": self.latency_count,
                "sum_s": self.latency_sum_s,
                "le_s": list(LATENCY_BUCKETS),
                "buckets": list(self.latency_buckets),
            },
            "labelled": self.labelled,
            "correct": self.correct,
            "confidence": {
                "count": self.confidence_count,
                "sum": self.confidence_sum,
                "sum_sq": self.confidence_sum_sq,
            },
        }


def read_counts(
    metrics: ServerMetrics,
    outcomes: Mapping[tuple[str, str, bool], int],
    model: str,
    versions: Iterable[str],
    shadow: str | None = None,
) -> dict[str, ArmCounts]:
    """Each version's counts now: primary answers only, but for the ``shadow`` version (a
    shadow experiment's challenger) its shadow copies, which answer nobody (for the requests,
    their latency and their confidence alike).

    ``outcomes`` maps (model, version, correct) to labelled rows (Feedback.outcomes).
    """
    wanted = set(versions)
    requests: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    for family in metrics.requests.collect():
        for s in family.samples:
            v = s.labels.get("version", "")
            if not s.name.endswith("_total") or s.labels.get("model") != model or v not in wanted:
                continue
            if s.labels.get("role") != ("shadow" if v == shadow else "primary"):
                continue
            requests[v] += int(s.value)
            if int(s.labels.get("code", "0")) >= 500:
                errors[v] += int(s.value)
    count: Counter[str] = Counter()
    total: dict[str, float] = {}
    buckets: dict[str, list[int]] = {v: [0] * len(LATENCY_BUCKETS) for v in wanted}
    bounds = {repr(float(b)): i for i, b in enumerate(LATENCY_BUCKETS)}
    for family in metrics.total.collect():
        for s in family.samples:
            v = s.labels.get("version", "")
            if s.labels.get("model") != model or v not in wanted:
                continue
            if s.labels.get("role") != ("shadow" if v == shadow else "primary"):
                continue
            if s.name.endswith("_count"):
                count[v] += int(s.value)
            elif s.name.endswith("_sum"):
                total[v] = total.get(v, 0.0) + float(s.value)
            elif s.name.endswith("_bucket") and (i := _bound(bounds, s.labels.get("le"))) >= 0:
                buckets[v][i] += int(s.value)
    confidence = {
        v: metrics.confidence.read(model, v, "shadow" if v == shadow else "primary") for v in wanted
    }
    return {
        v: ArmCounts(
            requests[v],
            errors[v],
            count[v],
            total.get(v, 0.0),
            tuple(buckets[v]),
            outcomes.get((model, v, True), 0) + outcomes.get((model, v, False), 0),
            outcomes.get((model, v, True), 0),
            *confidence[v],
        )
        for v in sorted(wanted, key=int)
    }


def _bound(bounds: Mapping[str, int], le: str | None) -> int:
    """The index of the bucket bound ``le`` names (-1: +Inf or unknown)."""
    try:
        return bounds.get(repr(float(le or "")), -1)
    except ValueError:
        return -1
