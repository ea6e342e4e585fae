"""Prometheus metrics of the server, in a registry of its own (one per app, none global).

Per request: ``edgeloop_requests_total`` by model, version, variant, endpoint, role (``primary``
or ``shadow``) and HTTP status code; ``edgeloop_errors_total`` by error type; latency
histograms of the time in the queue, in inference and in the server in all. Per model:
refusals by reason (queue full, not ready, timeout, body too large), hot swaps, shadow copies
and their agreement with the primary; cascade escalations (rows sent up), calls to the large
tier (a served model or a parent over HTTP) and fallbacks to the small answer. Read at each
``GET /metrics`` from where they live (:class:`RuntimeCollector`): requests in flight and the
queue limit, batches and their sizes, the model pool's loads, unloads, evictions and resident
memory, the adaptive policies' variant switches (labelled ``policy="load"`` or ``"power"``),
readiness.

Label values come from the served catalog, never from the request: a request for an unknown
model is counted under ``model="_unknown"`` (no valid model name starts with ``_``), so a client
cannot grow the label set without bound.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from edgeloop.serving.confidence_tally import ConfidenceTally

UNKNOWN = "_unknown"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# 50 us .. 10 s: a batch-1 inference of a small model is ~0.1 ms, a timeout is 10 s.
LATENCY_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_ARM = ("model", "version", "variant", "role")


@dataclass(frozen=True, slots=True)
class Timing:
    """Where one answered request's time went, in seconds."""

    queue_s: float
    inference_s: float
    total_s: float


class ServerMetrics:
    """The server's metric objects; observe methods are cheap enough for every request."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        ProcessCollector(registry=r)  # process_resident_memory_bytes, cpu seconds, open fds
        self.requests = Counter(
            "edgeloop_requests",
            "Requests answered, by model, version, variant, endpoint, role and status code.",
            [*_ARM, "endpoint", "code"],
            registry=r,
        )
        self.errors = Counter(
            "edgeloop_errors", "Requests that failed, by model and error type.",
            ["model", "version", "error"], registry=r,
        )  # fmt: skip
        self.queue = self._histogram("edgeloop_queue_seconds", "Time waiting for a batch.")
        self.inference = self._histogram("edgeloop_inference_seconds", "Time in the engine.")
        self.total = self._histogram("edgeloop_request_seconds", "Time in the server in all.")
        self.rejected = Counter(
            "edgeloop_rejected", "Requests refused, by model and reason.",
            ["model", "reason"], registry=r,
        )  # fmt: skip
        self.shadow = Counter(
            "edgeloop_shadow", "Shadow copies, by outcome (answered, failed, dropped).",
            ["model", "version", "outcome"], registry=r,
        )  # fmt: skip
        self.agreement = Counter(
            "edgeloop_shadow_agreement", "Shadow answers whose top-1 matched the primary's.",
            ["model", "version", "result"], registry=r,
        )  # fmt: skip
        self.swaps = Counter(
            "edgeloop_swaps", "Hot swaps (load requests), by outcome.",
            ["model", "outcome"], registry=r,
        )  # fmt: skip
        self.escalations = Counter(
            "edgeloop_cascade_escalations",
            "Rows a cascade's small model sent to the large tier, by tier (large, parent).",
            ["model", "tier"], registry=r,
        )  # fmt: skip
        self.cascade_calls = Counter(
            "edgeloop_cascade_calls", "Requests to a cascade's large tier (large, parent).",
            ["model", "tier"], registry=r,
        )  # fmt: skip
        self.fallbacks = Counter(
            "edgeloop_cascade_fallbacks",
            "Escalations answered by the small model because the tier failed, by error type.",
            ["model", "tier", "error"], registry=r,
        )  # fmt: skip
        # Top-1 confidence sums per (model, version, role): a fleet experiment's confidence
        # metric (serving/confidence_tally.py; plain sums, not exported to /metrics).
        self.confidence = ConfidenceTally()
        # Label lookups cost microseconds each; a request's children are looked up once.
        self._arms: dict[tuple[str, ...], tuple[Any, Any, Any]] = {}
        self._counts: dict[tuple[str, ...], Any] = {}

    def _histogram(self, name: str, doc: str) -> Histogram:
        return Histogram(name, doc, list(_ARM), buckets=LATENCY_BUCKETS, registry=self.registry)

    def observe(
        self, arm: tuple[str, str, str, str], endpoint: str, code: int, timing: Timing | None
    ) -> None:
        """Count one request of ``arm`` (model, version, variant, role) and its timing."""
        key = (*arm, endpoint, str(code))
        counter = self._counts.get(key)
        if counter is None:
            counter = self._counts[key] = self.requests.labels(*key)
        counter.inc()
        if timing is None:
            return
        children = self._arms.get(arm)
        if children is None:
            children = (
                self.queue.labels(*arm),
                self.inference.labels(*arm),
                self.total.labels(*arm),
            )
            self._arms[arm] = children
        children[0].observe(timing.queue_s)
        children[1].observe(timing.inference_s)
        children[2].observe(timing.total_s)

    def failed(self, model: str, version: str, error: str) -> None:
        self.errors.labels(model, version, error).inc()

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


@dataclass(frozen=True, slots=True)
class BatcherFigures:
    """One variant's batcher counters as the runtime reports them."""

    model: str
    version: str
    variant: str
    batches: int
    retried_batches: int
    queue_depth: int
    batch_sizes: Sequence[tuple[int, int]]  # (samples in a run, runs of that size)


@dataclass(frozen=True, slots=True)
class PoolFigures:
    """One pool entry's counters; ``size_basis`` says whether ``size_mb`` was measured."""

    model: str
    version: str
    variant: str
    loaded: bool
    size_mb: float
    size_basis: str
    loads: int
    unloads: int
    evictions: int


@dataclass(frozen=True, slots=True)
class SwitchFigures:
    """One version's adaptive policy: the variant serving now and the switches so far."""

    model: str
    version: str
    variant: str
    switches: int
    policy: str = "load"


@dataclass(frozen=True, slots=True)
class RuntimeFigures:
    batchers: tuple[BatcherFigures, ...]
    pool: tuple[PoolFigures, ...]
    switches: tuple[SwitchFigures, ...]
    ready: tuple[tuple[str, str, bool], ...]  # (model, version, ready)
    admission: tuple[tuple[str, int, int], ...]  # (model, requests in flight, queue limit)
    budget_mb: float | None


class RuntimeCollector(Collector):
    """Reads the runtime's counters at scrape time (they live in the runtime, not here)."""

    def __init__(self, read: Callable[[], RuntimeFigures]) -> None:
        self._read = read

    def describe(self) -> Iterable[Metric]:
        return ()  # unchecked collector: its families depend on what is loaded

    def collect(self) -> Iterator[Metric]:
        figures = self._read()
        yield from _batch_families(figures.batchers)
        yield from _pool_families(figures.pool, figures.budget_mb)
        switches = CounterMetricFamily(
            "edgeloop_variant_switches", "Variant switches of the adaptive policy (load, power).",
            labels=["model", "version", "policy"],
        )  # fmt: skip
        active = GaugeMetricFamily(
            "edgeloop_variant_active", "1 for the variant serving now.",
            labels=["model", "version", "variant"],
        )  # fmt: skip
        for s in figures.switches:
            switches.add_metric([s.model, s.version, s.policy], s.switches)
            active.add_metric([s.model, s.version, s.variant], 1)
        ready = GaugeMetricFamily(
            "edgeloop_model_ready", "1 when a model version answers requests.",
            labels=["model", "version"],
        )  # fmt: skip
        for model, version, ok in figures.ready:
            ready.add_metric([model, version], 1 if ok else 0)
        in_flight = GaugeMetricFamily(
            "edgeloop_in_flight", "Requests admitted and not yet answered.", labels=["model"]
        )
        limit = GaugeMetricFamily(
            "edgeloop_queue_limit", "Requests a model admits at once (--max-queue).",
            labels=["model"],
        )  # fmt: skip
        for model, admitted, bound in figures.admission:
            in_flight.add_metric([model], admitted)
            limit.add_metric([model], bound)
        yield from (switches, active, ready, in_flight, limit)


def _batch_families(batchers: Sequence[BatcherFigures]) -> Iterator[Metric]:
    labels = ["model", "version", "variant"]
    sizes = HistogramMetricFamily(
        "edgeloop_batch_size", "Samples per engine run (one observation per batch).", labels=labels
    )
    batches = CounterMetricFamily("edgeloop_batches", "Engine runs.", labels=labels)
    retried = CounterMetricFamily(
        "edgeloop_batch_retries", "Failed batches run again request by request.", labels=labels
    )
    depth = GaugeMetricFamily(
        "edgeloop_queue_depth", "Requests waiting for a batch.", labels=labels
    )
    for b in batchers:
        key = [b.model, b.version, b.variant]
        buckets, total = _cumulative(b.batch_sizes)
        sizes.add_metric(key, buckets, total)
        batches.add_metric(key, b.batches)
        retried.add_metric(key, b.retried_batches)
        depth.add_metric(key, b.queue_depth)
    yield from (sizes, batches, retried, depth)


def _cumulative(counts: Sequence[tuple[int, int]]) -> tuple[list[tuple[str, float]], float]:
    """Prometheus buckets (cumulative counts per upper bound, ``+Inf`` last) and the sum."""
    buckets = []
    for bound in BATCH_BUCKETS:
        buckets.append((str(bound), float(sum(n for size, n in counts if size <= bound))))
    buckets.append(("+Inf", float(sum(n for _, n in counts))))
    return buckets, float(sum(size * n for size, n in counts))


def _pool_families(pool: Sequence[PoolFigures], budget_mb: float | None) -> Iterator[Metric]:
    labels = ["model", "version", "variant"]
    loads = CounterMetricFamily("edgeloop_pool_loads", "Model loads.", labels=labels)
    unloads = CounterMetricFamily("edgeloop_pool_unloads", "Model unloads.", labels=labels)
    evictions = CounterMetricFamily(
        "edgeloop_pool_evictions", "Unloads to fit the memory budget.", labels=labels
    )
    resident = GaugeMetricFamily(
        "edgeloop_pool_resident_bytes",
        "Resident memory of a loaded model (RSS change across its load, or an estimate).",
        labels=[*labels, "basis"],
    )
    for p in pool:
        key = [p.model, p.version, p.variant]
        loads.add_metric(key, p.loads)
        unloads.add_metric(key, p.unloads)
        evictions.add_metric(key, p.evictions)
        if p.loaded:
            resident.add_metric([*key, p.size_basis], p.size_mb * 1024 * 1024)
    yield from (loads, unloads, evictions, resident)
    if budget_mb is not None:
        budget = GaugeMetricFamily("edgeloop_pool_budget_bytes", "The memory budget.")
        budget.add_metric([], budget_mb * 1024 * 1024)
        yield budget
