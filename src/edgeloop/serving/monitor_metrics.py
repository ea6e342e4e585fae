"""The drift monitors' Prometheus series, read at each ``GET /metrics`` from the watches.

==============================================================  ==================================
``edgeloop_drift_score{model,version,kind}``                    gauge: the largest score over its
                                                                threshold (> 1: past the line);
                                                                kind input/prediction/confidence
``edgeloop_drift_alarms_total{model,version,kind}``             counter: drift kinds, ``quality``
                                                                and ``degradation`` events
``edgeloop_quality_total{model,version,problem}``               counter: ``nonfinite`` samples,
                                                                ``out_of_range`` values,
                                                                ``wrong_shape`` samples
``edgeloop_monitor_samples_total{model,version}``               rows the monitor took
``edgeloop_monitor_dropped_total{model,version,reason}``        rows not taken: ``queue_full``,
                                                                ``refused``
``edgeloop_windowed_accuracy{model,version}``                   gauge, from labels (when any)
``edgeloop_windowed_macro_f1{model,version}``                   gauge, from labels (when any)
``edgeloop_estimated_accuracy{model,version}``                  gauge: ATC estimate (when
                                                                profiled with labels)
``edgeloop_monitor_state_bytes{model,version}``                 gauge
``edgeloop_labels_total{model,outcome}``                        counter: applied / unknown /
                                                                invalid
==============================================================  ==================================

Only READY versions with a monitor appear; a retired version's series go with it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from edgeloop.serving.watch import Watch

_MV = ["model", "version"]


class MonitorCollector(Collector):
    """Series of the watches ``read`` returns and the label counts ``labels`` holds."""

    def __init__(self, read: Callable[[], list[Watch]], labels: Counter[tuple[str, str]]) -> None:
        self.read = read
        self.labels = labels

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        watches = self.read()
        for watch in watches:
            watch.flush()
        score = GaugeMetricFamily(
            "edgeloop_drift_score", "Drift score over its threshold (> 1: past the line).",
            labels=[*_MV, "kind"],
        )  # fmt: skip
        alarms = CounterMetricFamily(
            "edgeloop_drift_alarms", "Monitor alarms (drift kinds, quality, degradation).",
            labels=[*_MV, "kind"],
        )  # fmt: skip
        quality = CounterMetricFamily(
            "edgeloop_quality", "Data-quality problems seen by the monitor.",
            labels=[*_MV, "problem"],
        )  # fmt: skip
        samples = CounterMetricFamily(
            "edgeloop_monitor_samples", "Rows the drift monitor took.", labels=_MV
        )
        dropped = CounterMetricFamily(
            "edgeloop_monitor_dropped", "Rows the monitor did not take.", labels=[*_MV, "reason"]
        )
        gauges = {
            name: GaugeMetricFamily(f"edgeloop_{name}", doc, labels=_MV)
            for name, doc in (
                ("windowed_accuracy", "Accuracy over the last window of labelled answers."),
                ("windowed_macro_f1", "Macro-F1 over the last window of labelled answers."),
                ("estimated_accuracy", "Accuracy estimated from confidences (ATC)."),
                ("monitor_state_bytes", "Bytes of state the drift monitor holds."),
            )
        }
        for watch in watches:
            monitor = watch.monitor
            if monitor is None:
                continue
            mv = [watch.model, watch.version]
            for kind, ratio in watch.score_ratios().items():
                score.add_metric([*mv, kind], ratio)
            for kind, count in watch.alarms.items():
                alarms.add_metric([*mv, kind], count)
            q = monitor.quality
            for problem, count in (("nonfinite", q.nonfinite_samples),
                                   ("out_of_range", q.out_of_range),
                                   ("wrong_shape", q.wrong_shape)):  # fmt: skip
                quality.add_metric([*mv, problem], count)
            samples.add_metric(mv, monitor.samples_seen)
            dropped.add_metric([*mv, "queue_full"], watch.dropped)
            dropped.add_metric([*mv, "refused"], watch.refused)
            perf = monitor.performance
            for name, value in (("windowed_accuracy", perf.accuracy),
                                ("windowed_macro_f1", perf.macro_f1),
                                ("estimated_accuracy", perf.estimated_accuracy),
                                ("monitor_state_bytes", float(monitor.state_bytes))):  # fmt: skip
                if value is not None:
                    gauges[name].add_metric(mv, value)
        labels = CounterMetricFamily(
            "edgeloop_labels", "Ground-truth labels posted.", labels=["model", "outcome"]
        )
        for (model, outcome), count in sorted(self.labels.items()):
            labels.add_metric([model, outcome], count)
        yield from (score, alarms, quality, samples, dropped, *gauges.values(), labels)
