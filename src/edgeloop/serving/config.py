"""The server's settings: one frozen value, checked once, shown by ``GET /v2`` and the CLI."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeloop.core.errors import ConfigError
from edgeloop.serving.capture import CaptureSpec
from edgeloop.serving.cascade import CascadeSpec
from edgeloop.serving.connections import ConnectionLimits
from edgeloop.serving.power import StatedPower
from edgeloop.serving.routing import Routing

# Why these defaults:
# - max_batch 1 / max_delay 0: no request waits for others unless asked (lowest latency at
#   batch 1); --max-batch 16 --max-delay-ms 2 is the throughput setting measured in
#   docs/benchmarks.md.
# - max_queue 64: a few batches' worth of backlog; beyond it a 429 is better than a late answer.
# - max_queue_delay 1000 ms: the longest a request may wait for its turn (event loop or a model's
#   queue) during a burst or a stall; while a queue stands the bound is a quarter of it (250 ms,
#   see admission.QueueDelay), which is what bounds latency under sustained overload. 200 ms
#   refused requests during a hot swap on a busy 2-CPU machine (loading a version stalled the
#   loop ~0.5 s; docs/benchmarks.md); 1 s absorbs such stalls. 0 turns the delay bound off.
# - max_body 16 MiB: 1000 images of 3x32x32 float32 in binary; JSON is ~4x larger per value.
# - timeout 10 s: finite by default (Starlette/httpx habit); an edge model answers in ms.
# - variant marks 20 / 5 ms of mean queue delay: a cheaper variant once requests wait longer
#   than a small model's inference, back once the queue is nearly empty (the gap is hysteresis).
# - inline below 1 ms: unbatched models faster than that run on the event loop (no thread hop);
#   at 1 ms, a request blocks the loop no longer than parsing a large JSON body does.
# - swap grace 30 s: how long a retired version may keep finishing its requests (3x timeout).
# - cascade timeout 2 s: a parent tier on the site network answers in tens of ms; past 2 s the
#   edge's own answer now is worth more than a better one later.
# - monitor sample rate 1.0: one update costs ~0.1 ms on 64 features (docs/serving.md has the
#   measured cost per request); lower it on a busy node. Queue 1024 rows: a burst of that many
#   waits for the loop's idle moments, more are counted as dropped (bounded memory).
# - labels: 10,000 answers wait at most 1 h for their label, 1,000 labels per body: a person or
#   a downstream system labels within minutes; the map stays under ~2 MB.
# - degradation drop 0.1: accuracy 10 points under the reference's is an event, not noise on
#   a 200-sample window (its standard error is ~3 points at 90 %).
# - power interval 5 s: long enough to average out bursts of requests (RAPL's counters tick
#   every ~1 ms), short enough to follow a variant switch within seconds.

# Engines that run .onnx files (the runtime registry names).
ONNX_ENGINES = ("onnxruntime", "openvino")


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """How ``edgeloop serve`` batches, bounds and times out requests.

    ``threads`` is ONNX Runtime's intra-op threads per model (None: the runtime's default).
    ``engine`` runs ONNX files on that engine (``onnxruntime`` or ``openvino``, the winner
    ``edgeloop tune`` recorded); None, or an engine not installed here, picks by file suffix.
    ``memory_budget_mb`` bounds the loaded models' measured resident memory (None: no bound).
    ``routing`` maps a model name to its A/B split and shadow version; ``cascades`` a small
    model's name to where its unsure rows go. ``power_budget_w`` puts every model with variants
    under a power budget, deciding on ``variant_power`` (stated figures) until a meter measures.
    ``connections`` bounds how long a client may take to send a request and how many
    connections are open (:mod:`edgeloop.serving.connections`).
    """

    max_batch: int = 1
    max_delay_ms: float = 0.0
    max_queue: int = 64
    max_queue_delay_ms: float = 1000.0
    early_refusal: bool = True  # decide admission from the headers (serving/shed.py)
    memory_budget_mb: float | None = None
    threads: int | None = None
    max_body_bytes: int = 16 * 1024 * 1024
    timeout_s: float = 10.0
    allow_nonfinite: bool = False
    shadow_queue: int = 16
    variant_high_ms: float = 20.0
    variant_low_ms: float = 5.0
    swap_grace_s: float = 30.0
    inline_below_ms: float = 1.0
    seed: int | None = None
    routing: Mapping[str, Routing] = field(default_factory=dict)
    cascades: Mapping[str, CascadeSpec] = field(default_factory=dict)
    cascade_timeout_s: float = 2.0
    power_budget_w: float | None = None
    variant_power: tuple[StatedPower, ...] = ()
    power_interval_s: float = 5.0
    engine: str | None = None
    connections: ConnectionLimits = field(default_factory=ConnectionLimits)
    profiles: Mapping[str, Path] = field(default_factory=dict)
    monitor_sample_rate: float = 1.0
    monitor_queue: int = 1024
    label_capacity: int = 10_000
    label_ttl_s: float = 3600.0
    label_batch_max: int = 1000
    degradation_drop: float = 0.1
    capture: CaptureSpec | None = None  # serving/capture.py; None: nothing captured
    capture_out: Path | None = None  # a standalone server's JSON Lines file of captures

    def __post_init__(self) -> None:
        problems = self._adaptive_problems()
        problems += self._monitor_problems()
        for name in ("max_batch", "max_queue", "max_body_bytes", "shadow_queue"):
            if getattr(self, name) < 1:
                problems.append(f"{name}={getattr(self, name)} (expected >= 1)")
        if self.threads is not None and self.threads < 1:
            problems.append(f"threads={self.threads} (expected >= 1)")
        for name in ("max_delay_ms", "max_queue_delay_ms"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                problems.append(f"{name}={value} (expected >= 0)")
        for name in ("timeout_s", "swap_grace_s", "cascade_timeout_s", "power_interval_s"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                problems.append(f"{name}={value} (expected > 0)")
        if not 0 <= self.variant_low_ms < self.variant_high_ms:
            problems.append(
                f"variant_low_ms={self.variant_low_ms}, variant_high_ms={self.variant_high_ms} "
                "(expected 0 <= low < high)"
            )
        if not math.isfinite(self.inline_below_ms) or self.inline_below_ms < 0:
            problems.append(f"inline_below_ms={self.inline_below_ms} (expected >= 0)")
        if self.engine not in (None, *ONNX_ENGINES):
            problems.append(f"engine={self.engine!r} (expected one of {', '.join(ONNX_ENGINES)})")
        budget = self.memory_budget_mb
        if budget is not None and (not math.isfinite(budget) or budget <= 0):
            problems.append(f"memory_budget_mb={budget} (expected > 0)")
        if problems:
            raise ConfigError(
                "server settings are not valid: " + "; ".join(problems),
                hint="see `edgeloop serve --help` for each flag's meaning",
            )

    def _monitor_problems(self) -> list[str]:
        problems = []
        if not 0.0 <= self.monitor_sample_rate <= 1.0:
            problems.append(f"monitor_sample_rate={self.monitor_sample_rate} (expected 0..1)")
        for name in ("monitor_queue", "label_capacity", "label_batch_max"):
            if getattr(self, name) < 1:
                problems.append(f"{name}={getattr(self, name)} (expected >= 1)")
        if not (math.isfinite(self.label_ttl_s) and self.label_ttl_s > 0):
            problems.append(f"label_ttl_s={self.label_ttl_s} (expected > 0)")
        if not 0.0 < self.degradation_drop < 1.0:
            problems.append(f"degradation_drop={self.degradation_drop} (expected 0 < drop < 1)")
        return problems

    def _adaptive_problems(self) -> list[str]:
        problems = []
        budget = self.power_budget_w
        if budget is not None and (not math.isfinite(budget) or budget <= 0):
            problems.append(f"power_budget_w={budget} (expected > 0 watts)")
        if self.variant_power and budget is None:
            problems.append("--variant-power without --power-budget-w (nothing to decide)")
        chained = sorted(
            s.large for s in self.cascades.values() if s.large and s.large in self.cascades
        )
        if chained:
            problems.append(
                f"cascade target(s) {chained} are themselves cascaded (expected one level)"
            )
        return problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_batch": self.max_batch,
            "max_delay_ms": self.max_delay_ms,
            "max_queue": self.max_queue,
            "max_queue_delay_ms": self.max_queue_delay_ms,
            "early_refusal": self.early_refusal,
            "memory_budget_mb": self.memory_budget_mb,
            "threads": self.threads,
            "max_body_bytes": self.max_body_bytes,
            "timeout_s": self.timeout_s,
            "allow_nonfinite": self.allow_nonfinite,
            "shadow_queue": self.shadow_queue,
            "variant_high_ms": self.variant_high_ms,
            "variant_low_ms": self.variant_low_ms,
            "swap_grace_s": self.swap_grace_s,
            "inline_below_ms": self.inline_below_ms,
            "routing": {name: r.to_dict() for name, r in self.routing.items()},
            "cascades": {name: c.to_dict() for name, c in self.cascades.items()},
            "cascade_timeout_s": self.cascade_timeout_s,
            "power_budget_w": self.power_budget_w,
            "variant_power": [s.to_dict() for s in self.variant_power],
            "power_interval_s": self.power_interval_s,
            "connections": self.connections.to_dict(),
            "profiles": {name: str(path) for name, path in self.profiles.items()},
            "monitor_sample_rate": self.monitor_sample_rate,
            "monitor_queue": self.monitor_queue,
            "label_capacity": self.label_capacity,
            "label_ttl_s": self.label_ttl_s,
            "label_batch_max": self.label_batch_max,
            "degradation_drop": self.degradation_drop,
            "capture": None if self.capture is None else self.capture.to_dict(),
            "capture_out": None if self.capture_out is None else str(self.capture_out),
        }
