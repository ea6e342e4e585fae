"""The aggregation maths as pure functions on stacked client vectors (Flower's `aggregate` module).

``rows`` is a ``(clients, params)`` float64 matrix; every function returns a new vector.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from edgeloop.core.errors import ConfigError
from edgeloop.federated.update import Vector


def _rows(rows: npt.ArrayLike) -> npt.NDArray[np.float64]:
    matrix = np.asarray(rows, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] == 0:
        raise ConfigError(
            f"aggregation needs a (clients, params) matrix with >= 1 client, got {matrix.shape}",
            hint="aggregate only when at least one update was accepted",
        )
    return matrix


def weighted_average(rows: npt.ArrayLike, weights: npt.ArrayLike) -> Vector:
    """sum_i w_i x_i / sum_i w_i  (FedAvg, McMahan et al. 2017: weights = local sample counts)."""
    matrix = _rows(rows)
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.shape[0] != matrix.shape[0] or (w < 0).any() or w.sum() <= 0:
        raise ConfigError(
            f"need one non-negative weight per client with a positive sum, got {w.tolist()}"
        )
    return np.asarray((w @ matrix) / w.sum(), dtype=np.float64)


def coordinate_median(rows: npt.ArrayLike) -> Vector:
    """Per-coordinate median (Yin et al. 2018): up to half the clients may be arbitrary."""
    return np.asarray(np.median(_rows(rows), axis=0), dtype=np.float64)


def trimmed_mean(rows: npt.ArrayLike, beta: float) -> Vector:
    """Per coordinate, drop the floor(beta*n) largest and smallest values and average the rest.

    Yin et al. 2018, "Byzantine-Robust Distributed Learning", the coordinate-wise trimmed mean.

    Raises:
        ConfigError: beta outside [0, 0.5) or nothing left after trimming.
    """
    matrix = _rows(rows)
    n = matrix.shape[0]
    k = math.floor(beta * n)
    if not 0.0 <= beta < 0.5 or n - 2 * k <= 0:
        raise ConfigError(
            f"trimmed mean with beta={beta} on {n} clients leaves nothing to average",
            hint="use 0 <= beta < 0.5 and more clients than 2*floor(beta*n)",
        )
    ordered = np.sort(matrix, axis=0)
    return np.asarray(ordered[k : n - k].mean(axis=0), dtype=np.float64)


def momentum_step(
    weights: Vector, delta: Vector, velocity: Vector, *, lr: float, momentum: float
) -> tuple[Vector, Vector]:
    """FedAvgM (Hsu et al. 2019): v <- beta*v + delta; x <- x + eta*v.

    ``delta`` is the averaged client change (avg_i x_i - x), the negative pseudo-gradient.
    """
    new_velocity = momentum * velocity + delta
    return weights + lr * new_velocity, new_velocity


SecondMoment = Callable[[Vector, Vector, float], Vector]


def adam_second_moment(v: Vector, delta: Vector, beta2: float) -> Vector:
    """FedAdam: v_t = b2 v_{t-1} + (1-b2) D_t^2."""
    return beta2 * v + (1.0 - beta2) * delta**2


def yogi_second_moment(v: Vector, delta: Vector, beta2: float) -> Vector:
    """FedYogi (Zaheer et al. 2018's Yogi): v_t = v_{t-1} - (1-b2) D_t^2 sign(v_{t-1} - D_t^2)."""
    d2 = delta**2
    return np.asarray(v - (1.0 - beta2) * d2 * np.sign(v - d2), dtype=np.float64)


def adaptive_step(
    weights: Vector,
    delta: Vector,
    m: Vector,
    v: Vector,
    *,
    second_moment: SecondMoment,
    lr: float,
    beta1: float,
    beta2: float,
    tau: float,
) -> tuple[Vector, Vector, Vector]:
    """Reddi et al. 2021 Algorithm 2 (no bias correction, as in the paper):

    m_t = b1 m_{t-1} + (1-b1) D_t;  v_t = second_moment(v_{t-1}, D_t, b2);
    x_{t+1} = x_t + eta m_t / (sqrt(v_t) + tau).
    """
    m_new = beta1 * m + (1.0 - beta1) * delta
    v_new = second_moment(v, delta, beta2)
    return weights + lr * m_new / (np.sqrt(v_new) + tau), m_new, v_new
