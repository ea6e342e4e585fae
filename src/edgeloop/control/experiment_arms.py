"""The fleet's per-arm figures of an experiment: node reports summed, then summarised.

Pure. Each node's report carries ``active.experiment`` (agent/arm_counts.py): per served
version, cumulative requests, errors, a latency histogram and labelled / correct rows. Counts
add across nodes exactly, so the fleet's figures are sums, and the sufficient statistics the
sequential test reads (:mod:`edgeloop.experiments`) are Bernoulli summaries of them:

- accuracy: correct out of labelled rows;
- error_rate: answers with status >= 500 out of requests;
- latency_p99: requests slower than the threshold fixed at the start, out of requests timed
  (the tail share; the threshold is rounded up to a histogram bound, as that is what the node
  counts). The treatment's p99 is worse exactly when more than 1 % of its requests are slower
  than the control's p99, so a threshold near the control's p99 tests the p99.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from edgeloop.core.errors import ConfigError
from edgeloop.experiments import BernoulliSummary, Metric
from edgeloop.serving.metrics import LATENCY_BUCKETS

SUPPORTED = (Metric.ACCURACY, Metric.ERROR_RATE, Metric.LATENCY_P99)


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

    def summary(self, metric: Metric, threshold_s: float) -> BernoulliSummary:
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
        }  # fmt: skip


@dataclass(slots=True)
class FleetArms:
    """Both arms' totals over the fleet, by device class, and what each node reported."""

    control: ArmTotals = field(default_factory=ArmTotals)
    treatment: ArmTotals = field(default_factory=ArmTotals)
    by_class: dict[str, tuple[ArmTotals, ArmTotals]] = field(default_factory=dict)
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)


def sum_reports(
    exp_id: str,
    versions: tuple[str, str],
    reports: Iterable[tuple[str, str, Mapping[str, Any] | None]],
) -> FleetArms:
    """Sum the ``(node_id, device_class, report)`` of the experiment's nodes.

    A node whose report names another experiment, or none, adds nothing and is listed with
    its state (``waiting`` or the agent's ``failed`` and why).
    """
    fleet = FleetArms()
    champion, challenger = versions
    for node_id, device_class, report in reports:
        active = _doc(_doc(report).get("active"))
        doc = active.get("experiment")
        if not isinstance(doc, dict) or doc.get("id") != exp_id:
            fleet.nodes[node_id] = {"state": "waiting", "serving": active.get("version")}
            continue
        if doc.get("state") != "serving":
            fleet.nodes[node_id] = {"state": str(doc.get("state")), "error": doc.get("error")}
            continue
        arms = _doc(doc.get("arms"))
        pair = fleet.by_class.setdefault(device_class, (ArmTotals(), ArmTotals()))
        for version, totals, cls in ((champion, fleet.control, pair[0]),
                                     (challenger, fleet.treatment, pair[1])):  # fmt: skip
            arm = arms.get(version)
            if isinstance(arm, dict):
                totals.add(arm)
                cls.add(arm)
        fleet.nodes[node_id] = {
            "state": "serving",
            "device_class": device_class,
            "requests": {v: _int(_doc(arms.get(v)).get("requests")) for v in versions},
        }
    return fleet


def _doc(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
