"""How a data set is split across federated clients: IID or per-class Dirichlet (pure numpy).

``iid``: ``default_rng(seed).permutation(n)`` cut into ``clients`` nearly equal parts with
``np.array_split`` (issue 14's protocol). ``dirichlet:ALPHA``: for each class, its indices are
shuffled and cut in proportions drawn from Dirichlet(ALPHA, ..., ALPHA), the usual non-IID
benchmark split (Hsu, Qi, Brown 2019); a small ALPHA gives each client few classes.
Both draw from one ``default_rng(seed)`` in a fixed order, so the same arguments always give the
same parts (``bench/fl_bench.py`` and ``edgeloop fleet up --fl-data`` use these functions).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edgeloop.core.errors import ConfigError

Indices = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Partition:
    """``iid`` (alpha None) or ``dirichlet`` with concentration ``alpha`` > 0."""

    kind: str
    alpha: float | None = None

    def __post_init__(self) -> None:
        if self.kind == "iid" and self.alpha is None:
            return
        if self.kind == "dirichlet" and self.alpha is not None and self.alpha > 0:
            return
        raise ConfigError(
            f"partition {self.kind!r} (alpha {self.alpha}) is not known",
            hint="use 'iid' or 'dirichlet:ALPHA' with ALPHA > 0, e.g. dirichlet:0.5",
        )

    @classmethod
    def parse(cls, text: str) -> Partition:
        """``iid`` or ``dirichlet:ALPHA``.

        Raises:
            ConfigError: anything else (the message names the accepted forms).
        """
        kind, _, alpha = text.strip().partition(":")
        if kind == "iid" and not alpha:
            return cls("iid")
        if kind == "dirichlet":
            try:
                return cls("dirichlet", float(alpha))
            except ValueError:
                pass
        raise ConfigError(
            f"--partition {text!r} is not understood",
            hint="use 'iid' or 'dirichlet:ALPHA' with ALPHA > 0, e.g. dirichlet:0.5",
        )

    def __str__(self) -> str:
        return self.kind if self.alpha is None else f"{self.kind}:{self.alpha:g}"

    def split(self, y: npt.ArrayLike, clients: int, seed: int = 42) -> list[Indices]:
        """The indices of each client's samples (every sample in exactly one part)."""
        labels = np.asarray(y).reshape(-1)
        if self.alpha is None:
            return iid_parts(len(labels), clients, seed)
        return dirichlet_parts(labels, clients, self.alpha, seed)


def _check(n: int, clients: int) -> None:
    if clients < 1 or n < clients:
        raise ConfigError(
            f"cannot split {n} samples across {clients} clients",
            hint="use fewer nodes, or a larger data set (at least one sample per client)",
        )


def iid_parts(n: int, clients: int, seed: int = 42) -> list[Indices]:
    """A seeded permutation of 0..n-1 cut into ``clients`` nearly equal parts."""
    _check(n, clients)
    order = np.random.default_rng(seed).permutation(n).astype(np.int64)
    return [np.asarray(p, dtype=np.int64) for p in np.array_split(order, clients)]


def dirichlet_parts(y: npt.ArrayLike, clients: int, alpha: float, seed: int = 42) -> list[Indices]:
    """Per class (in sorted order), its shuffled indices cut in Dirichlet(alpha) proportions;
    each client's indices sorted. A client may get no sample at all when alpha is small."""
    labels = np.asarray(y).reshape(-1)
    _check(len(labels), clients)
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in range(clients)]
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        share = rng.dirichlet([alpha] * clients)
        cuts = (np.cumsum(share) * len(idx)).astype(int)[:-1]
        for k, chunk in enumerate(np.split(idx, cuts)):
            parts[k].extend(int(i) for i in chunk)
    return [np.sort(np.array(p, dtype=np.int64)) for p in parts]
