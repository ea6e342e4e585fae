"""The edge runtime: engines with provider fallback, a memory-budget model pool, a dynamic
batcher, adaptive variant policies and a cascade.

Nothing here imports torch, at import time or later: the edge agent installs without it.
Engine libraries (onnxruntime, openvino, ai_edge_litert) are imported when a model is loaded.
"""

from edgeloop.runtime.adaptive import (
    LoadPolicy,
    LoadState,
    LoadSwitch,
    PowerBasis,
    PowerDecision,
    PowerPolicy,
    PowerSwitch,
    SwitchStats,
    VariantPower,
)
from edgeloop.runtime.batcher import BatcherStats, BatchResult, DynamicBatcher
from edgeloop.runtime.cascade import Cascade, CascadeResult, CascadeStats, Scores, confidence
from edgeloop.runtime.engine import (
    DEFAULT_PROVIDERS,
    Engine,
    GraphOptimization,
    LoadedModel,
    ModelInfo,
    SessionConfig,
    check_feeds,
)
from edgeloop.runtime.engines import (
    EngineStatus,
    engine_for_path,
    engine_names,
    engine_statuses,
    get_engine,
    load_model,
    register_engine,
)
from edgeloop.runtime.memory import RssDelta, rss_bytes
from edgeloop.runtime.pool import ModelKey, ModelPool, ModelStats, PoolStats, SizeBasis

__all__ = [
    "DEFAULT_PROVIDERS",
    "BatchResult",
    "BatcherStats",
    "Cascade",
    "CascadeResult",
    "CascadeStats",
    "DynamicBatcher",
    "Engine",
    "EngineStatus",
    "GraphOptimization",
    "LoadPolicy",
    "LoadState",
    "LoadSwitch",
    "LoadedModel",
    "ModelInfo",
    "ModelKey",
    "ModelPool",
    "ModelStats",
    "PoolStats",
    "PowerBasis",
    "PowerDecision",
    "PowerPolicy",
    "PowerSwitch",
    "RssDelta",
    "Scores",
    "SessionConfig",
    "SizeBasis",
    "SwitchStats",
    "VariantPower",
    "check_feeds",
    "confidence",
    "engine_for_path",
    "engine_names",
    "engine_statuses",
    "get_engine",
    "load_model",
    "register_engine",
    "rss_bytes",
]
