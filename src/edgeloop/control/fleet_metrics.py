"""The control plane's own ``GET /metrics``: fleet gauges in Prometheus text, read per scrape.

============================================================  ====================================
``edgeloop_fleet_nodes{state}``                               gauge: enrolled nodes by their
                                                              updater's reported state
                                                              (``unreported`` before a report)
``edgeloop_fleet_version_nodes{model,version}``               gauge: nodes reporting the version
``edgeloop_fleet_nodes_drifting{model,version}``              gauge: of those, drifting now
``edgeloop_fleet_estimated_accuracy_min{model,version}``      gauge: the lowest estimate
``edgeloop_fleet_alerts_firing{rule}``                        gauge: alerts firing per rule
``edgeloop_fleet_telemetry_items_total{outcome}``             counter (this process): accepted,
                                                              duplicates, rejected,
                                                              monitoring_updates
``edgeloop_fleet_alert_notices_total{outcome}``               counter (this process): webhook
                                                              sent, retried, failed, dropped
``edgeloop_fleet_alert_evaluations_total``                    counter (this process)
============================================================  ====================================
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from edgeloop.control import alert_store, monitoring, tables
from edgeloop.control.alerting import Alerting
from edgeloop.control.plane import ControlPlane

_MV = ["model", "version"]


def _node_states(conn: sa.Connection) -> Counter[str]:
    states: Counter[str] = Counter()
    for (text,) in conn.execute(sa.select(tables.nodes.c.reported)):
        state = "unreported"
        if text:
            try:
                updater = json.loads(text).get("updater") or {}
                state = str(updater.get("state") or "unknown")[:64]
            except (ValueError, AttributeError):
                state = "unknown"
        states[state] += 1
    return states


class _Fleet(Collector):
    def __init__(self, plane: ControlPlane, alerting: Alerting | None) -> None:
        self.plane, self.alerting = plane, alerting

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        def read(
            conn: sa.Connection,
        ) -> tuple[Counter[str], list[monitoring.FleetRow], dict[str, int]]:
            return _node_states(conn), monitoring.read(conn), alert_store.firing_by_rule(conn)

        states, rows, firing = self.plane.read("reading fleet gauges", read)
        nodes = GaugeMetricFamily(
            "edgeloop_fleet_nodes", "Enrolled nodes by updater state.", labels=["state"]
        )
        for state, n in sorted(states.items()):
            nodes.add_metric([state], n)
        yield nodes
        seen = GaugeMetricFamily(
            "edgeloop_fleet_version_nodes", "Nodes reporting a version.", labels=_MV
        )
        drift = GaugeMetricFamily(
            "edgeloop_fleet_nodes_drifting", "Nodes drifting now.", labels=_MV
        )
        acc = GaugeMetricFamily(
            "edgeloop_fleet_estimated_accuracy_min",
            "Lowest estimated accuracy over the nodes.",
            labels=_MV,
        )
        by: dict[tuple[str, str], list[monitoring.FleetRow]] = {}
        for row in rows:
            by.setdefault((row.model, row.version), []).append(row)
        for key, group in sorted(by.items()):
            seen.add_metric(list(key), len(group))
            drift.add_metric(list(key), sum(1 for r in group if r.drifting))
            estimates = [r.estimated_accuracy for r in group if r.estimated_accuracy is not None]
            if estimates:
                acc.add_metric(list(key), min(estimates))
        yield from (seen, drift, acc)
        alerts = GaugeMetricFamily(
            "edgeloop_fleet_alerts_firing", "Alerts firing, by rule.", labels=["rule"]
        )
        for rule, n in sorted(firing.items()):
            alerts.add_metric([rule], n)
        yield alerts
        yield from self._counters()

    def _counters(self) -> Iterator[Metric]:
        items = CounterMetricFamily(
            "edgeloop_fleet_telemetry_items",
            "Telemetry items taken by this process.",
            labels=["outcome"],
        )
        for outcome in ("accepted", "duplicates", "rejected", "monitoring_updates"):
            items.add_metric([outcome], monitoring.INGEST[outcome])
        yield items
        sender = self.alerting.sender if self.alerting is not None else None
        notices = CounterMetricFamily(
            "edgeloop_fleet_alert_notices", "Webhook notices by outcome.", labels=["outcome"]
        )
        for outcome in ("sent", "retried", "failed", "dropped"):
            notices.add_metric([outcome], sender.counts[outcome] if sender else 0)
        yield notices
        evaluations = self.alerting.evaluations if self.alerting is not None else 0
        yield CounterMetricFamily(
            "edgeloop_fleet_alert_evaluations", "Alert rule evaluations.", value=evaluations
        )


class FleetMetrics:
    """Renders the fleet gauges of one plane (a registry of its own: no process globals)."""

    def __init__(self, plane: ControlPlane, alerting: Alerting | None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Fleet(plane, alerting))

    def render(self) -> bytes:
        return generate_latest(self.registry)
