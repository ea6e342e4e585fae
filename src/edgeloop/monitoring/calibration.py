"""The alarm thresholds of the drift statistic, calibrated by a bootstrap of the reference.

A threshold read from a chi-square table would assume Gaussian, independent features and an
exactly known reference; none holds (digits' pixels are skewed counts, BasicMotions gives 40
reference rows). The bootstrap (Efron, 1979) replays what the monitor will meet, with the
reference standing in for the population. A no-shift stream is a finite sample whose mean
differs from the reference's by the error of both (``~2/n`` per feature in variance): each
replicate draws a resample of a resample of the reference (its mean is off by that much),
streams ``length`` rows from it with replacement through the fitted statistic and records the
largest location and energy scores. The ``1 - alpha`` quantile of those maxima is the threshold,
``alpha`` being the chance of a false alarm in ``length`` samples that the target rate allows,
split between the two scores (a union bound). Taking maxima makes it conservative: one
excursion above the threshold is at most one alarm.

The fitted principal axes are kept fixed here; their own error enters through the rows the
replicates stream, which are scored as new rows would be (``statistic.calibration_rows``:
held-out energies, inflated location scores). The benchmark checks the outcome on real
held-out streams (docs/monitoring.md), and a test by simulation on a 40-row reference.

Randomness: a ``numpy`` generator seeded by the caller, so a profile is reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from edgeloop.core.errors import ConfigError
from edgeloop.monitoring.statistic import F64

# Replicates scored together: the stacked stream is (length, CHUNK, width) floats.
CHUNK = 16


def calibrate_thresholds(
    parts: Sequence[F64],
    *,
    lam: float,
    denominator: float,
    alarms_per_1000: float,
    replicates: int,
    length: int,
    seed: int,
) -> tuple[float, ...]:
    """One threshold per score part, for at most ``alarms_per_1000`` false alarms per 1,000.

    ``parts`` are the reference rows as the statistic sees new rows, one ``(n, width)`` matrix
    per part (``statistic.calibration_rows``); each part gets an equal share of the allowed
    rate (a union bound).

    Raises:
        ConfigError: a rate, replicate count or length that cannot give a quantile.
    """
    alpha = alarms_per_1000 * length / 1000.0 / len(parts)
    if not 0.0 < alpha < 1.0 or replicates < 10 or length < 1:
        raise ConfigError(
            f"calibration with rate {alarms_per_1000}/1000, length {length} and {replicates} "
            f"replicates: expected 0 < rate * length / 1000 / {len(parts)} < 1 and at least "
            "10 replicates",
            hint="lower the rate or the calibration length",
        )
    rng = np.random.default_rng(seed)
    scored = np.concatenate(parts, axis=1) / np.sqrt(denominator)
    n = scored.shape[0]
    starts = np.cumsum([0] + [p.shape[1] for p in parts[:-1]])
    peaks: list[F64] = []
    for start in range(0, replicates, CHUNK):
        streams = []
        for _ in range(min(CHUNK, replicates - start)):
            resample = np.asarray(rng.integers(0, n, size=n))
            source = resample[rng.integers(0, n, size=n)]
            streams.append(scored[source[rng.integers(0, n, size=length)]])
        peaks.append(_running_max_norms(np.stack(streams, axis=1), starts, lam))
    maxima = np.concatenate(peaks)  # (replicates, parts)
    return tuple(float(q) for q in np.quantile(maxima, 1.0 - alpha, axis=0))


def _running_max_norms(values: F64, starts: npt.NDArray[np.int64], lam: float) -> F64:
    """Largest squared norm over time of the EWMA of each part of ``values``.

    ``values`` is ``(length, r, width)``, part ``i`` in the columns from ``starts[i]``.
    Returns ``(r, parts)``.
    """
    acc = np.zeros(values.shape[1:])
    peak = np.zeros((values.shape[1], len(starts)))
    keep = 1.0 - lam
    for t in range(values.shape[0]):
        acc *= keep
        acc += lam * values[t]
        np.maximum(peak, np.add.reduceat(acc * acc, starts, axis=1), out=peak)
    return peak
