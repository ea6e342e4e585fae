"""Federated learning, the pure-maths core: arrays in, decisions out (no HTTP, no disk, no torch).

- updates and their screening: :mod:`.update`
- server strategies (registered by name in :data:`STRATEGIES`): FedAvg, FedProx, FedAvgM,
  FedAdam, FedYogi, coordinate median, trimmed mean
- the round's state machine and partial participation: :mod:`.round`
- client selection (registered in :data:`SELECTORS`): :mod:`.selection`
- secure aggregation (Bonawitz et al. 2017): :mod:`.secagg`
- client-level differential privacy and its accountant: :mod:`.dp`, :mod:`.accountant`
- convergence records and plateau detection: :mod:`.convergence`
"""

from __future__ import annotations

from edgeloop.federated.dp import DpConfig, DpFedAvg, clip_to_norm
from edgeloop.federated.fedadam import FedAdam
from edgeloop.federated.fedavg import FedAvg
from edgeloop.federated.fedavgm import FedAvgM
from edgeloop.federated.fedopt import ServerOptimizer
from edgeloop.federated.fedprox import FedProx, proximal_gradient, proximal_term
from edgeloop.federated.fedyogi import FedYogi
from edgeloop.federated.median import CoordinateMedian
from edgeloop.federated.round import (
    ALLOWED,
    Deadline,
    Participation,
    RoundOutcome,
    RoundState,
    close_round,
    transition,
)
from edgeloop.federated.selection import SELECTORS
from edgeloop.federated.strategy import STRATEGIES, Aggregate, ServerState, Strategy
from edgeloop.federated.trimmed_mean import TrimmedMean
from edgeloop.federated.update import (
    ClientUpdate,
    ParameterLayout,
    RejectReason,
    Screening,
    UpdateLimits,
    Verdict,
    check_update,
    screen,
)

__all__ = [
    "ALLOWED",
    "SELECTORS",
    "STRATEGIES",
    "Aggregate",
    "ClientUpdate",
    "CoordinateMedian",
    "Deadline",
    "DpConfig",
    "DpFedAvg",
    "FedAdam",
    "FedAvg",
    "FedAvgM",
    "FedProx",
    "FedYogi",
    "ParameterLayout",
    "Participation",
    "RejectReason",
    "RoundOutcome",
    "RoundState",
    "Screening",
    "ServerOptimizer",
    "ServerState",
    "Strategy",
    "TrimmedMean",
    "UpdateLimits",
    "Verdict",
    "check_update",
    "clip_to_norm",
    "close_round",
    "proximal_gradient",
    "proximal_term",
    "screen",
    "transition",
]
