"""The SDK's typed results. Each is a frozen dataclass that also answers ``result["key"]``.

MISSION.md's examples read results as mappings (``status["nodes"]["total_nodes"]``); the
:class:`Keyed` mixin gives that over the dataclass fields, so the values stay typed and a
misspelt key is a ``KeyError`` that lists the fields there are.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

NO_MANIFEST = (
    "the control plane's model listing carries no manifest (so no measurements); "
    "it must list each version's manifest"
)


class Keyed:
    """``obj["name"]`` reads the field ``name``; ``keys()`` lists the fields."""

    __slots__ = ()

    def keys(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self)]  # type: ignore[arg-type]

    def __getitem__(self, key: str) -> Any:
        if key not in self.keys():
            raise KeyError(f"{type(self).__name__} has no {key!r}; its fields: {self.keys()}")
        return getattr(self, key)

    def __contains__(self, key: object) -> bool:
        return key in self.keys()

    def to_dict(self) -> dict[str, Any]:
        return {k: _plain(getattr(self, k)) for k in self.keys()}


def _plain(value: Any) -> Any:
    if isinstance(value, Keyed):
        return value.to_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True, slots=True)
class ModelInfo(Keyed):
    """One registered model version; figures from its manifest's first measurement."""

    name: str
    version: int
    ref: str
    sha256: str
    size_bytes: int
    latency_ms: float | None  # p50 at the measured batch size
    accuracy: float | None
    measured_on: str | None  # the CPU (and split) the figures come from
    reason: str | None  # why latency/accuracy are None


@dataclass(frozen=True, slots=True)
class ModelList(Keyed):
    models: list[ModelInfo]

    def __iter__(self) -> Any:
        return iter(self.models)

    def __len__(self) -> int:
        return len(self.models)


@dataclass(frozen=True, slots=True)
class NodeCounts(Keyed):
    total_nodes: int
    online: int
    by_device_class: dict[str, int]


@dataclass(frozen=True, slots=True)
class EdgeStatus(Keyed):
    models_deployed: int  # distinct name:version active on at least one node
    active_models: list[str]
    nodes: NodeCounts
    online_window_s: float


@dataclass(frozen=True, slots=True)
class NodeInfo(Keyed):
    node_id: str
    name: str
    device_type: str | None
    device_class: str | None
    online: bool
    last_seen: str | None
    memory_total: float | None  # GB, as the agent reported at enrollment
    memory_available: float | None  # GB (GiB), MemAvailable as the node's last report read it
    cpu: str | None
    cpu_count: int | None
    cpu_load_1m: float | None  # the node's 1-minute load average, from its last report
    active_models: list[str]
    drift: Any
    agent_url: str | None
    reasons: dict[str, str] = field(default_factory=dict)  # why a figure is None


@dataclass(frozen=True, slots=True)
class NodeStatus(Keyed):
    nodes: dict[str, NodeInfo]  # by node name


@dataclass(frozen=True, slots=True)
class InferenceResult(Keyed):
    output: list[Any]  # the first output tensor, as nested lists
    outputs: dict[str, list[Any]]
    inference_time_ms: float  # measured here, around the HTTP call
    server_time_ms: float | None
    model_name: str
    model_version: str | None
    node: str
    reason: str | None  # why server_time_ms is None


@dataclass(frozen=True, slots=True)
class DeployResult(Keyed):
    version: int
    ref: str
    node: str
    rollout_id: str
    state: str
    stated: dict[str, float | None]  # the figures the EdgeModel declared
    measured: dict[str, float | None]  # the registered manifest's figures
    reason: str | None


@dataclass(frozen=True, slots=True)
class QuantizeResult(Keyed):
    ref: str  # the variant, registered on the control plane
    parent: str
    method: str
    original_size_mb: float
    quantized_size_mb: float
    speedup: float  # parent p50 / variant p50, both measured here
    original_latency_ms: float
    quantized_latency_ms: float
    original_accuracy: float | None
    quantized_accuracy: float | None
    measured_on: str


@dataclass(frozen=True, slots=True)
class PruneResult(Keyed):
    ref: str  # the variant, registered on the control plane with its pruned checkpoint
    parent: str
    method: str
    sparsity: float  # the share of each layer's channels removed
    original_parameters: int  # Torch-Pruning's count of the torch module
    pruned_parameters: int
    original_macs: int
    pruned_macs: int
    original_size_mb: float  # the ONNX files
    pruned_size_mb: float
    speedup: float  # parent p50 / variant p50, both measured here
    original_latency_ms: float
    pruned_latency_ms: float
    original_accuracy: float | None
    pruned_accuracy: float | None
    measured_on: str


@dataclass(frozen=True, slots=True)
class BenchmarkResult(Keyed):
    """A benchmark the node's agent ran on the file it holds (warm-up, then timed runs)."""

    model: str
    node: str
    throughput_fps: float  # inferences per second: batch_size * runs / timed seconds
    power_watts: float | None  # mean over the timed runs, from the node's meter
    power_reason: str | None  # why power_watts is None (no meter on the node, ...)
    power_source: str | None  # the meter (rapl, ina3221) when there is a reading
    latency_p50_ms: float
    latency_p99_ms: float
    batch_size: int
    runs: int
    peak_rss_mb: float | None
    cpu: str
    threads: int


@dataclass(frozen=True, slots=True)
class IncrementalResult(Keyed):
    """An incremental (on-device library) run on new labelled samples."""

    accuracy_before: float  # on the new data's held-out part, before training
    accuracy_after: float
    old_accuracy_before: float | None  # on the registered data set's test split
    old_accuracy_after: float | None
    forgetting_pp: float | None
    accepted: bool  # rejected: forgot too much, or no gain on the new data
    reason: str
    ref: str | None  # the registered result when accepted
    parent: str
    new_train_samples: int
    new_holdout_samples: int
    epochs_run: int
    wall_seconds: float
    ran_on: str


@dataclass(frozen=True, slots=True)
class FederatedRound(Keyed):
    """The last round of a federated task, as the control plane measured it."""

    round: int
    total_samples: int  # training samples behind the accepted updates
    aggregated_update: float  # L2 norm of (new global - old global), by the control plane
    accuracy: float | None  # test-sample-weighted, on the clients' held-out shares
    eval_samples: int
    loss: float | None
    participants: list[str]  # node names
    dropouts: list[str]
    task_id: str
    registered: str | None  # the registry ref of the resulting model, when registered
    model: str
    strategy: str
    reason: str | None  # why accuracy is None


def node_info(row: dict[str, Any], window_s: float, now: float) -> NodeInfo:
    """A control-plane node row as the SDK shows it. Pure: no I/O."""
    caps = row.get("capabilities") or {}
    reported = row.get("reported") or {}
    reasons: dict[str, str] = {}
    free = reported.get("resources") or {}
    available_mb = free.get("memory_available_mb")
    if available_mb is None:
        reasons["memory_available"] = str(
            free.get("reason")
            or "the node's last report carries no memory reading (an agent "
            "older than the resources field, or no report yet)"
        )
    load = free.get("load_1m")
    if load is None:
        reasons["cpu_load_1m"] = str(free.get("reason") or "the node's last report carries no load")
    memory_mb = caps.get("memory_mb")
    if memory_mb is None:
        reasons["memory_total"] = "the agent could not read its memory size (/proc/meminfo)"
    drift = reported.get("monitoring")  # a report may carry it; else the manager looks it up
    if drift is None:
        reasons["drift"] = "the node's report to the control plane carries no drift state"
    seen = row.get("last_seen")
    age = None if seen is None else now - datetime.fromisoformat(seen).timestamp()
    active = reported.get("active") or {}
    cls = row.get("device_class")
    return NodeInfo(
        node_id=str(row["node_id"]),
        name=str(row["name"]),
        device_type=None if cls is None else str(cls).rsplit("-", 1)[-1],
        device_class=cls,
        online=age is not None and age <= window_s,
        last_seen=seen,
        memory_total=None if memory_mb is None else round(float(memory_mb) / 1024.0, 3),
        memory_available=None if available_mb is None else round(float(available_mb) / 1024.0, 3),
        cpu=caps.get("cpu_model"),
        cpu_count=caps.get("cpu_count"),
        cpu_load_1m=None if load is None else float(load),
        active_models=[f"{active['name']}:{active['version']}"] if active.get("name") else [],
        drift=drift,
        agent_url=row.get("agent_url"),
        reasons=reasons,
    )


def model_info(row: dict[str, Any]) -> ModelInfo:
    """A ``/api/v1/models`` row with the figures of its manifest's first measurement."""
    manifest = row.get("manifest")
    measured = (manifest or {}).get("measurements") or []
    latency = accuracy = where = reason = None
    if manifest is None:
        reason = NO_MANIFEST
    elif not measured:
        reason = f"{row['ref']} was registered without a measurement (`edgeloop bench` it)"
    else:
        m = measured[0]
        latency, accuracy = float(m["latency_ms"]["p50"]), m.get("accuracy")
        where = f"{m.get('cpu')}, batch {m.get('batch_size')}, {m.get('accuracy_split')}"
        if accuracy is None:
            reason = "accuracy was not measured (benchmarked without data)"
    return ModelInfo(
        str(row["name"]), int(row["version"]), str(row["ref"]), str(row["sha256"]),
        int(row["size_bytes"]), latency, accuracy, where, reason,
    )  # fmt: skip
