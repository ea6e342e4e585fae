"""The fleet's per-arm figures of an experiment: node reports summed, then summarised.

Pure. Each node's report carries ``active.experiment`` (agent/arm_counts.py): per served
version, cumulative requests, errors, a latency histogram, labelled / correct rows and the
count, sum and sum of squares of the answers' top-1 confidence. Counts and sums add across
nodes exactly, so the fleet's figures are sums, and the sufficient statistics the sequential
test reads (:mod:`edgeloop.experiments`) are Bernoulli summaries of them, but for confidence:

- accuracy: correct out of labelled rows;
- error_rate: answers with status >= 500 out of requests;
- latency_p99: requests slower than the threshold fixed at the start, out of requests timed
  (the tail share; the threshold is rounded up to a histogram bound, as that is what the node
  counts). The treatment's p99 is worse exactly when more than 1 % of its requests are slower
  than the control's p99, so a threshold near the control's p99 tests the p99;
- confidence: a continuous summary (count, mean, M2 = Q - S^2/n) of the top-1 probability of
  every row answered with class scores; higher is better. A proxy: a more confident model is
  not a more often right one (docs/experiments.md, "Confidence as a metric").

A node's counts start again from 0 when its agent restarts (a new ``since``; the counters of a
fresh server). So the sums never go backwards, the look keeps a ledger per node: the last
counts it reported for this experiment and a carry of what it had counted before each restart.
A report with a new ``since``, or with any count below the last one, moves the last counts into
the carry; a node that reports nothing for the experiment for a while (restarting, offline)
still adds its carry and last counts. The node's figure is carry + its report.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from edgeloop.core.errors import ConfigError
from edgeloop.experiments import BernoulliSummary, ContinuousSummary, Metric
from edgeloop.serving.metrics import LATENCY_BUCKETS

SUPPORTED = (Metric.ACCURACY, Metric.ERROR_RATE, Metric.LATENCY_P99, Metric.CONFIDENCE)


@dataclass(slots=True)
class ArmTotals:
    """One arm's counts, summed over nodes."""

    requests: int = 0
    errors: int = 0
    latency_count: int = 0
    latency_sum_s: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BUCKETS))
    labelled: int = 0
    correct: int = 0
    confidence_count: int = 0
    confidence_sum: float = 0.0
    confidence_sum_sq: float = 0.0

    def add(self, doc: Mapping[str, Any]) -> None:
        """Add one node's arm (a report's ``arms[version]``); malformed parts count as 0."""
        self.requests += _int(doc.get("requests"))
        self.errors += _int(doc.get("errors"))
        latency = _doc(doc.get("latency"))
        self.latency_count += _int(latency.get("count"))
        total = latency.get("sum_s")
        if isinstance(total, int | float) and math.isfinite(total) and total >= 0:
            self.latency_sum_s += float(total)
        counts = latency.get("buckets")
        if isinstance(counts, list) and len(counts) == len(self.buckets):
            self.buckets = [a + _int(b) for a, b in zip(self.buckets, counts, strict=True)]
        self.labelled += _int(doc.get("labelled"))
        self.correct += min(_int(doc.get("correct")), _int(doc.get("labelled")))
        n, total, squares = _confidence(doc.get("confidence"))
        self.confidence_count += n
        self.confidence_sum += total
        self.confidence_sum_sq += squares

    def to_raw(self) -> dict[str, Any]:
        """These totals in a node report's shape (what :meth:`add` reads)."""
        return {"requests": self.requests, "errors": self.errors, "labelled": self.labelled,
                "correct": self.correct, "latency": {"count": self.latency_count,
                "sum_s": self.latency_sum_s, "buckets": list(self.buckets)},
                "confidence": {"count": self.confidence_count, "sum": self.confidence_sum,
                               "sum_sq": self.confidence_sum_sq}}  # fmt: skip

    def went_below(self, other: ArmTotals) -> bool:
        """Whether any count here is below ``other``'s (the node's counters were reset)."""
        pairs = [
            (self.requests, other.requests),
            (self.errors, other.errors),
            (self.latency_count, other.latency_count),
            (self.labelled, other.labelled),
            (self.correct, other.correct),
            (self.confidence_count, other.confidence_count),
            *zip(self.buckets, other.buckets, strict=True),
        ]
        return any(a < b for a, b in pairs)  # fmt: skip

    def slower_than(self, threshold_s: float) -> int:
        """Requests timed above the first histogram bound >= ``threshold_s``."""
        i = min(bisect.bisect_left(LATENCY_BUCKETS, threshold_s), len(LATENCY_BUCKETS) - 1)
        return max(0, self.latency_count - self.buckets[i])

    def p99_ms(self) -> float | None:
        """The histogram bound at the nearest rank of the 99th percentile (an upper bound)."""
        if self.latency_count == 0:
            return None
        rank = math.ceil(0.99 * self.latency_count)
        i = bisect.bisect_left(self.buckets, rank)
        return LATENCY_BUCKETS[i] * 1000.0 if i < len(LATENCY_BUCKETS) else None

    def confidence(self) -> ContinuousSummary:
        """Welford's (count, mean, M2) of the top-1 confidence, from the count and sums."""
        n = self.confidence_count
        if n == 0:
            return ContinuousSummary(0)
        mean = self.confidence_sum / n
        return ContinuousSummary(n, mean, max(0.0, self.confidence_sum_sq - mean * mean * n))

    def summary(self, metric: Metric, threshold_s: float) -> BernoulliSummary | ContinuousSummary:
        if metric is Metric.CONFIDENCE:
            return self.confidence()
        if metric is Metric.ACCURACY:
            return BernoulliSummary(self.correct, self.labelled)
        if metric is Metric.ERROR_RATE:
            return BernoulliSummary(min(self.errors, self.requests), self.requests)
        if metric is Metric.LATENCY_P99:
            return BernoulliSummary(self.slower_than(threshold_s), self.latency_count)
        raise ConfigError(f"metric {metric} is not measured per arm on the nodes",
                          hint=f"use one of {[m.value for m in SUPPORTED]}")  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": self.errors / self.requests if self.requests else None,
            "latency_mean_ms": (self.latency_sum_s / self.latency_count * 1000.0)
            if self.latency_count else None,
            "latency_p99_ms": self.p99_ms(),
            "labelled": self.labelled,
            "correct": self.correct,
            "accuracy": self.correct / self.labelled if self.labelled else None,
            "confidence_rows": self.confidence_count,
            "confidence_mean": self.confidence_sum / self.confidence_count
            if self.confidence_count else None,
        }  # fmt: skip


@dataclass(slots=True)
class FleetArms:
    """Both arms' totals over the fleet, by device class, and what each node reported."""

    control: ArmTotals = field(default_factory=ArmTotals)
    treatment: ArmTotals = field(default_factory=ArmTotals)
    by_class: dict[str, tuple[ArmTotals, ArmTotals]] = field(default_factory=dict)
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    # node id -> {"since", "last": {version: raw}, "carry": {version: raw}} (module docstring)
    ledger: dict[str, dict[str, Any]] = field(default_factory=dict)


def _totals(*docs: Any) -> ArmTotals:
    totals = ArmTotals()
    for doc in docs:
        if isinstance(doc, dict):
            totals.add(doc)
    return totals


def _entry(
    versions: tuple[str, str], previous: Mapping[str, Any], since: Any, arms: Mapping[str, Any]
) -> dict[str, Any]:
    """A node's new ledger entry from its previous one and this report's arms."""
    last, carry = _doc(previous.get("last")), _doc(previous.get("carry"))
    now = {v: _totals(arms.get(v)) for v in versions}
    reset = bool(previous) and (
        previous.get("since") != since
        or any(now[v].went_below(_totals(last.get(v))) for v in versions)
    )
    if reset:
        carry = {v: _totals(carry.get(v), last.get(v)).to_raw() for v in versions}
    return {"since": since, "last": {v: now[v].to_raw() for v in versions}, "carry": carry}


def sum_reports(
    exp_id: str,
    versions: tuple[str, str],
    reports: Iterable[tuple[str, str, Mapping[str, Any] | None]],
    ledger: Mapping[str, Any] | None = None,
) -> FleetArms:
    """Sum the ``(node_id, device_class, report)`` of the experiment's nodes; ``ledger`` is the
    previous look's (:attr:`FleetArms.ledger`, see the module docstring).

    A node whose report names another experiment, or none, adds what the ledger holds for it
    and is listed with its state (``waiting`` or the agent's ``failed`` and why).
    """
    fleet = FleetArms()
    champion, challenger = versions
    before = _doc(ledger)
    for node_id, device_class, report in reports:
        active = _doc(_doc(report).get("active"))
        doc = active.get("experiment")
        entry = _doc(before.get(node_id))
        if not isinstance(doc, dict) or doc.get("id") != exp_id:
            fleet.nodes[node_id] = {"state": "waiting", "serving": active.get("version")}
        elif doc.get("state") != "serving":
            fleet.nodes[node_id] = {"state": str(doc.get("state")), "error": doc.get("error")}
        else:
            entry = _entry(versions, entry, doc.get("since"), _doc(doc.get("arms")))
            fleet.nodes[node_id] = {"state": "serving", "device_class": device_class}
        if not entry:
            continue
        fleet.ledger[node_id] = entry
        pair = fleet.by_class.setdefault(device_class, (ArmTotals(), ArmTotals()))
        requests = {}
        for version, totals, cls in ((champion, fleet.control, pair[0]),
                                     (challenger, fleet.treatment, pair[1])):  # fmt: skip
            for part in (_doc(entry["carry"]).get(version), _doc(entry["last"]).get(version)):
                if isinstance(part, dict):
                    totals.add(part)
                    cls.add(part)
            requests[version] = _totals(_doc(entry["carry"]).get(version),
                                        _doc(entry["last"]).get(version)).requests  # fmt: skip
        fleet.nodes[node_id]["requests"] = requests
    return fleet


def _doc(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _confidence(value: Any) -> tuple[int, float, float]:
    """A node's ``confidence`` block as (count, sum, sum of squares), or zeros when any part is
    malformed (a count without its sums would bias the mean). Each top-1 probability p lies in
    [0, 1], so 0 <= sum of squares <= sum <= count (with room for rounding)."""
    doc = _doc(value)
    n, total, squares = _int(doc.get("count")), _float(doc.get("sum")), _float(doc.get("sum_sq"))
    slack = 1e-9 * (n + 1)
    if n == 0 or not (0 <= squares <= total + slack and total <= n + slack):  # NaN: False
        return 0, 0.0, 0.0
    return n, total, squares


def _float(value: Any) -> float:
    """A finite number as a float; NaN for anything else (fails every bound)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return math.nan


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
