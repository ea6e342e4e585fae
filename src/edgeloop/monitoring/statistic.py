"""The drift statistic: exponentially weighted chi-square scores on whitened features.

Each monitored sample ``x`` (``k`` features) is standardised with the reference,
``u = (x - mean) / std``, and projected on the reference's leading principal axes, whitened by
their spread: ``z = V' u / s`` (``p`` axes). Only as many axes are kept as hold 95 % of the
variance and as the reference has rows to estimate (one axis per 5 rows): a covariance of 40
rows cannot whiten 12 features reliably, its leading axes it can. ``z`` is clipped to
``[-clip, clip]`` so a rare extreme value moves the statistic by a bounded step. Two
exponentially weighted moving averages (EWMA; Roberts, Technometrics 1, 1959; the multivariate
MEWMA of Lowry et al., Technometrics 34, 1992) follow the stream:

- location, ``EWMA(z)`` (``p`` values): the mean moved (a covariate shift, a new class mix);
- energy, ``EWMA(e)`` (2 values): ``e`` is the standardised ``|z|^2`` of the sample
  (Hotelling's T^2) and its residual energy off the axes (squared prediction error, Jackson &
  Mudholkar, Technometrics 21, 1979): a gain, or a shift off the reference's correlations.

Under no shift each EWMA coordinate has variance ``f = lam / (2 - lam)`` (the stationary EWMA
variance) plus the error of the reference's own estimate, ``~1/n``, and again ``~1/n`` for a
stream that is itself a finite sample. Each score is ``|EWMA|^2 / (f + 2/n)``, chi-square-like;
the thresholds are calibrated by a bootstrap (``calibration.py``), not read from a table, since
the features are neither Gaussian nor independent.

Pure numpy: ``score_rows`` scores a whole stream at once (tests, calibration);
``detector.StreamingScore`` steps one sample at a time (the request path).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edgeloop.core.errors import DataError

F64 = npt.NDArray[np.float64]

# A feature whose reference variance is below this share of the largest one is constant for
# the statistic (an always-black pixel); it is watched by the range check in quality.py only.
CONSTANT_SHARE = 1e-10


@dataclass(frozen=True, slots=True, eq=False)
class ChiSquareModel:
    """The fitted, immutable part of the statistic (stored in the reference profile).

    ``active`` are the indices of the non-constant features the statistic uses; ``mean`` and
    ``scale`` their reference mean and std; ``basis`` (``k x p``) the leading principal axes of
    the standardised features and ``spread`` their standard deviations.
    """

    active: npt.NDArray[np.int64]
    mean: F64
    scale: F64
    basis: F64
    spread: F64
    energy_mean: F64
    energy_std: F64
    n: int
    lam: float
    clip: float

    def __post_init__(self) -> None:
        k = len(self.active)
        p = self.basis.shape[1] if self.basis.ndim == 2 else -1
        if k == 0:
            raise DataError("the statistic needs at least one non-constant feature")
        shapes = {
            "mean": (self.mean.shape, (k,)),
            "scale": (self.scale.shape, (k,)),
            "basis": (self.basis.shape, (k, p)),
            "spread": (self.spread.shape, (p,)),
            "energy_mean": (self.energy_mean.shape, (2,)),
            "energy_std": (self.energy_std.shape, (2,)),
        }
        for name, (got, want) in shapes.items():
            if got != want or p < 1:
                raise DataError(f"statistic field {name!r} has shape {got}, expected {want}")
        if not 0.0 < self.lam < 1.0:
            raise DataError(f"EWMA weight lam={self.lam}, expected 0 < lam < 1")
        if self.n < 2:
            raise DataError(f"reference size n={self.n}, expected at least 2 rows")

    @property
    def components(self) -> int:
        return int(self.basis.shape[1])

    @property
    def residual(self) -> bool:
        """Whether the principal axes leave a residual space (then its energy is watched)."""
        return self.components < len(self.active)

    @property
    def denominator(self) -> float:
        """``f + 2/n``: the variance of one EWMA coordinate under no shift (module doc)."""
        return self.lam / (2.0 - self.lam) + 2.0 / self.n


def fit_model(
    rows: F64, *, lam: float, clip: float, rows_per_axis: int, energy: float
) -> ChiSquareModel:
    """Fit the statistic to reference feature rows ``(n, k)``.

    Raises:
        DataError: fewer than two rows, or every feature constant.
    """
    n = rows.shape[0]
    if n < 2:
        raise DataError(f"the reference has {n} row(s); at least 2 are needed to estimate spread")
    var = rows.var(axis=0)
    active = np.flatnonzero(var > CONSTANT_SHARE * max(float(var.max()), 1e-300))
    if active.size == 0:
        raise DataError(
            "every feature of the reference is constant (zero variance)",
            hint="give reference samples that vary; a constant input cannot show drift",
        )
    x = rows[:, active]
    mean, scale, vals, vecs = _axes(x)
    # Axes kept: enough for `energy` of the variance, but at most one per `rows_per_axis`
    # reference rows, so each kept axis's variance is estimated from enough rows to whiten by.
    by_energy = int(np.searchsorted(np.cumsum(vals) / vals.sum(), energy) + 1)
    p = max(1, min(len(active), by_energy, n // rows_per_axis))
    basis = np.ascontiguousarray(vecs[:, :p])
    spread = np.sqrt(vals[:p])
    held = _held_out(x, scale, p, clip)
    return ChiSquareModel(
        active=active.astype(np.int64),
        mean=mean,
        scale=scale,
        basis=basis,
        spread=spread,
        energy_mean=held.mean(axis=0),
        energy_std=np.maximum(held.std(axis=0), 1e-9),
        n=n,
        lam=lam,
        clip=clip,
    )


def _axes(x: F64, scale: F64 | None = None) -> tuple[F64, F64, F64, F64]:
    """Mean, std, and principal variances/axes (largest first) of the standardised rows."""
    mean = x.mean(axis=0)
    if scale is None:
        scale = np.maximum(x.std(axis=0), 1e-12)
    u = (x - mean) / scale
    vals, vecs = np.linalg.eigh((u.T @ u) / x.shape[0])
    return mean, scale, np.maximum(vals[::-1], 1e-12), vecs[:, ::-1]


def _held_out(x: F64, scale: F64, p: int, clip: float, folds: int = 5) -> F64:
    """Energies (``|z|^2`` on the axes, residual) ``(n, 2)`` of rows unseen by the fit.

    Principal axes fitted on a sample leave less residual energy in that sample than in new
    rows (they are chosen to fit it), so the no-shift level of both energies is measured by
    K-fold cross-fitting: each fold is projected on axes fitted to the other folds.
    """
    n = x.shape[0]
    order = np.arange(n)
    out = np.empty((n, 2))
    for f in range(min(folds, n)):
        held = order[f::folds]
        rest = np.setdiff1d(order, held)
        if len(rest) < 2:
            held, rest = order, order
        mean, _, vals, vecs = _axes(x[rest], scale)
        u = (x[held] - mean) / scale
        out[held] = _energies(u, u @ vecs[:, :p], np.sqrt(vals[:p]), clip)
    return out


def _energies(u: F64, c: F64, spread: F64, clip: float) -> F64:
    """Per row: squared norm of the clipped whitened scores, and the residual energy (SPE)."""
    z = np.clip(c / spread, -clip, clip)
    spe = (u * u).sum(axis=1) - (c * c).sum(axis=1)
    return np.stack([(z * z).sum(axis=1), np.maximum(spe, 0.0)], axis=1)


def transform(model: ChiSquareModel, rows: F64) -> tuple[F64, F64]:
    """Rows ``(m, d)`` -> the location part ``(m, p)`` and the energy part ``(m, 2)``.

    Location: the clipped whitened principal scores. Energy: the standardised squared norm of
    those scores (Hotelling's T^2 of one sample) and of what is left outside the principal
    axes (squared prediction error, Jackson & Mudholkar, Technometrics 21, 1979; 0 when no
    axis is left out). A gain moves both energies; a shift off the reference's correlations
    moves the second.
    """
    u = (rows[:, model.active] - model.mean) / model.scale
    c = u @ model.basis
    loc = np.clip(c / model.spread, -model.clip, model.clip)
    energy = (_energies(u, c, model.spread, model.clip) - model.energy_mean) / model.energy_std
    if not model.residual:
        energy[:, 1] = 0.0
    return loc, np.clip(energy, -model.clip, model.clip)


def calibration_rows(model: ChiSquareModel, rows: F64) -> tuple[F64, F64]:
    """The reference rows as new no-shift samples look to the statistic: ``(n, p)``, ``(n, 2)``.

    A reference row scored by axes fitted on it looks better than a new row: its energies are
    lower and its whitened scores a little smaller. The energies are therefore taken held-out
    (K-fold, as in the fit), and the location scores are inflated by the held-out to in-sample
    ratio of their squared norm, so the bootstrap (calibration.py) streams what new rows give.
    """
    x = rows[:, model.active]
    held = _held_out(x, model.scale, model.components, model.clip)
    energy = np.clip((held - model.energy_mean) / model.energy_std, -model.clip, model.clip)
    loc, _ = transform(model, rows)
    inside = float((loc * loc).sum(axis=1).mean())
    inflation = max(1.0, float(held[:, 0].mean()) / max(inside, 1e-12))
    return loc * np.sqrt(inflation), energy


def score_rows(model: ChiSquareModel, rows: F64) -> tuple[F64, F64]:
    """Location and energy scores after each row of a stream from a fresh state, ``(m,)`` each."""
    loc, energy = transform(model, rows)
    m1 = ewma(loc, model.lam)
    m2 = ewma(energy, model.lam)
    den = model.denominator
    return (m1 * m1).sum(axis=-1) / den, (m2 * m2).sum(axis=-1) / den


def ewma(values: F64, lam: float) -> F64:
    """EWMA along axis 0 from a zero start: ``m_t = (1 - lam) m_{t-1} + lam v_t``."""
    out = np.empty_like(values)
    acc = np.zeros(values.shape[1:], dtype=values.dtype)
    keep = 1.0 - lam
    for t in range(values.shape[0]):
        acc *= keep
        acc += lam * values[t]
        out[t] = acc
    return out
