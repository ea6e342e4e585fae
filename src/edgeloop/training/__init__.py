"""Training: the model zoo, ``fit`` with early stopping, held-out metrics and checkpoints.

This package imports torch; the agent / serving side never imports it.
"""

from edgeloop.training.checkpoint import (
    CheckpointInfo,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from edgeloop.training.fit import EpochRecord, FitConfig, Optimizer, TrainResult, fit
from edgeloop.training.metrics import Metrics, anomaly_scores, evaluate, predict_logits
from edgeloop.training.zoo import (
    ArchConfig,
    ArchSpec,
    build,
    default_arch,
    deployable,
    known_archs,
    register,
)

__all__ = [
    "ArchConfig",
    "ArchSpec",
    "CheckpointInfo",
    "EpochRecord",
    "FitConfig",
    "Metrics",
    "Optimizer",
    "TrainResult",
    "anomaly_scores",
    "build",
    "default_arch",
    "deployable",
    "evaluate",
    "fit",
    "known_archs",
    "load_checkpoint",
    "predict_logits",
    "read_checkpoint",
    "register",
    "save_checkpoint",
]
