"""Client-level differential privacy: DP-FedAvg (McMahan, Ramage, Talwar, Zhang 2018).

Each round, with the global model x and client changes D_k = x_k - x:

    clip:   D_k' = D_k * min(1, C / ||D_k||_2)                      (every ||D_k'|| <= C)
    mean:   D    = sum_k D_k' / m                                    (m: expected clients qN,
                                                                      or the clients that answered)
    noise:  D~   = D + N(0, sigma^2 I),   sigma = z * C / m          (z: noise multiplier)
    step:   x   <- x + D~

Clients are weighted equally (the paper's "fixed-denominator" estimator with w_k = 1): a
sample-count weight would let one client's bound exceed C / m. The privacy loss of the whole
task is accounted by :mod:`edgeloop.federated.accountant` (Poisson-subsampled Gaussian, q = m/N).

The noise comes from a numpy Generator: seeded for reproducible benchmarks; ``seed=None`` draws
from OS entropy, which a real deployment must use (a known seed reveals the noise).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgeloop.core.errors import ConfigError
from edgeloop.federated.strategy import STRATEGIES, Aggregate, ServerState, stack, total_samples
from edgeloop.federated.update import ClientUpdate, Vector


def clip_to_norm(delta: Vector, clip_norm: float) -> Vector:
    """D * min(1, C / ||D||_2): unchanged inside the ball, scaled onto its surface outside."""
    norm = float(np.linalg.norm(delta))
    scale = 1.0 if norm <= clip_norm else clip_norm / norm
    return np.asarray(delta, dtype=np.float64) * scale


@dataclass(frozen=True, slots=True)
class DpConfig:
    """z (noise multiplier), C (clip norm), and m, the denominator (None: clients that answered)."""

    noise_multiplier: float = 1.0
    clip_norm: float = 1.0
    expected_clients: float | None = None

    def __post_init__(self) -> None:
        if not (self.noise_multiplier >= 0 and self.clip_norm > 0):
            raise ConfigError(
                f"DP needs noise_multiplier >= 0 and clip_norm > 0, got "
                f"{self.noise_multiplier}, {self.clip_norm}",
                hint="McMahan et al. 2018 use z ~ 1 and C chosen near the median update norm",
            )
        if self.expected_clients is not None and self.expected_clients <= 0:
            raise ConfigError(f"expected_clients must be > 0, got {self.expected_clients}")

    def noise_std(self, answered: int) -> float:
        """sigma = z * C / m."""
        m = self.expected_clients if self.expected_clients is not None else answered
        return self.noise_multiplier * self.clip_norm / m


def private_mean_delta(
    global_weights: Vector,
    updates: Sequence[ClientUpdate],
    config: DpConfig,
    rng: np.random.Generator,
) -> Vector:
    """The noised, clipped mean change D~ of the formula above."""
    rows, _ = stack(global_weights, updates)
    clipped = np.stack([clip_to_norm(r - global_weights, config.clip_norm) for r in rows])
    m = config.expected_clients if config.expected_clients is not None else len(updates)
    mean = clipped.sum(axis=0) / m
    noise = rng.normal(0.0, config.noise_std(len(updates)), size=mean.shape)
    return np.asarray(mean + noise, dtype=np.float64)


@dataclass(frozen=True, slots=True)
class DpFedAvg:
    """DP-FedAvg with server learning rate 1; noise drawn from ``(seed, round)`` when seeded."""

    config: DpConfig = DpConfig()
    seed: int | None = None

    @property
    def name(self) -> str:
        return "dp-fedavg"

    def aggregate(
        self, global_weights: Vector, updates: Sequence[ClientUpdate], state: ServerState
    ) -> Aggregate:
        rng = np.random.default_rng(None if self.seed is None else [self.seed, state.step])
        delta = private_mean_delta(global_weights, updates, self.config, rng)
        return Aggregate(
            global_weights + delta,
            ServerState(step=state.step + 1),
            len(updates),
            total_samples(updates),
        )


def _create(
    noise_multiplier: float = 1.0,
    clip_norm: float = 1.0,
    expected_clients: float | None = None,
    seed: int | None = None,
) -> DpFedAvg:
    return DpFedAvg(DpConfig(noise_multiplier, clip_norm, expected_clients), seed)


STRATEGIES.register("dp-fedavg")(_create)
