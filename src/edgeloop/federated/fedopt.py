"""What FedAdam and FedYogi share: hyper-parameters of Reddi et al. 2021's server optimizers.

Reddi et al. 2021, "Adaptive Federated Optimization", Algorithm 2: the server treats the
sample-weighted mean client change D_t as a negative pseudo-gradient and takes an adaptive step.
Initialisation as in the paper: m_{-1} = 0, v_{-1} = tau^2.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgeloop.core.errors import ConfigError
from edgeloop.federated.aggregate import SecondMoment, adaptive_step
from edgeloop.federated.strategy import Aggregate, ServerState, fedavg_delta, total_samples
from edgeloop.federated.update import ClientUpdate, Vector


@dataclass(frozen=True, slots=True)
class ServerOptimizer:
    """eta (server lr), beta1, beta2 and tau (adaptivity) of Reddi et al. 2021.

    Defaults are the paper's (beta1=0.9, beta2=0.99, tau=1e-3); eta must be tuned per task.
    """

    lr: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3

    def __post_init__(self) -> None:
        if not (self.lr > 0 and 0 <= self.beta1 < 1 and 0 <= self.beta2 < 1 and self.tau > 0):
            raise ConfigError(
                f"server optimizer needs lr > 0, 0 <= beta1, beta2 < 1, tau > 0; got lr={self.lr}"
                f" beta1={self.beta1} beta2={self.beta2} tau={self.tau}",
                hint="Reddi et al. 2021 use beta1=0.9, beta2=0.99, tau=1e-3",
            )

    def moments(self, state: ServerState, like: Vector) -> tuple[Vector, Vector]:
        """(m, v) from the state, or the paper's initial values (0, tau^2)."""
        m = state.m if state.m is not None else np.zeros_like(like)
        v = state.v if state.v is not None else np.full_like(like, self.tau**2)
        return m, v


def adaptive_aggregate(
    optimizer: ServerOptimizer,
    second_moment: SecondMoment,
    global_weights: Vector,
    updates: Sequence[ClientUpdate],
    state: ServerState,
) -> Aggregate:
    """One server step on D_t, the sample-weighted mean client change."""
    delta = fedavg_delta(global_weights, updates)
    m, v = optimizer.moments(state, global_weights)
    o = optimizer
    weights, m, v = adaptive_step(
        global_weights, delta, m, v,
        second_moment=second_moment, lr=o.lr, beta1=o.beta1, beta2=o.beta2, tau=o.tau,
    )  # fmt: skip
    new_state = ServerState(step=state.step + 1, m=m, v=v)
    return Aggregate(weights, new_state, len(updates), total_samples(updates))
