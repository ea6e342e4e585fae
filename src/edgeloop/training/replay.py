"""A bounded replay buffer of a node's earlier samples, kept by reservoir sampling.

Algorithm R (Vitter, "Random sampling with a reservoir", ACM TOMS 11(1), 1985): the first
``capacity`` samples fill the buffer; the t-th sample after that (0-based index t >= capacity)
replaces a uniformly chosen slot with probability capacity / (t + 1). After any number of
samples every one seen so far is in the buffer with the same probability, so the buffer is a
uniform sample of the node's whole history in bounded memory.

The buffer persists between runs as one ``.npz`` (x, y, seen, seed) written atomically, so a
node accumulates it. The random draws are seeded by (seed, seen): the same stream of samples
gives the same buffer whatever the chunks it arrived in.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edgeloop.core.errors import ConfigError, DataError, UntrustedArtifactError
from edgeloop.core.files import write_atomic


@dataclass(eq=False)
class ReplayBuffer:
    """At most ``capacity`` samples of shape ``sample_shape``, a uniform sample of all seen.

    Raises:
        ConfigError: capacity < 1 or a bad sample shape.
    """

    capacity: int
    sample_shape: tuple[int, ...]
    seed: int = 0
    seen: int = 0
    _x: npt.NDArray[np.float32] = field(init=False, repr=False)
    _y: npt.NDArray[np.int64] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if (
            isinstance(self.capacity, bool)
            or not isinstance(self.capacity, int)
            or self.capacity < 1
        ):
            raise ConfigError(
                f"replay capacity {self.capacity!r} is not valid; expected an int >= 1"
            )
        if not self.sample_shape or any(d < 1 for d in self.sample_shape):
            raise ConfigError(f"replay sample shape {self.sample_shape} is not valid")
        self._x = np.zeros((self.capacity, *self.sample_shape), dtype=np.float32)
        self._y = np.zeros(self.capacity, dtype=np.int64)

    def __len__(self) -> int:
        return min(self.seen, self.capacity)

    @property
    def x(self) -> npt.NDArray[np.float32]:
        return self._x[: len(self)]

    @property
    def y(self) -> npt.NDArray[np.int64]:
        return self._y[: len(self)]

    def add(self, x: npt.NDArray[np.float32], y: npt.NDArray[np.int64]) -> None:
        """Offer samples ``x`` (n, *sample_shape) with labels ``y`` (n,) to the reservoir.

        Raises:
            DataError: shapes that do not fit the buffer.
        """
        if tuple(x.shape[1:]) != self.sample_shape or x.shape[0] != len(y) or y.ndim != 1:
            raise DataError(
                f"replay samples of shape {x.shape} with labels {y.shape} do not fit a buffer of "
                f"samples {self.sample_shape}",
                hint="offer samples of the model's input shape, one label each",
            )
        for i in range(len(y)):
            slot = self._slot()
            if slot is not None:
                self._x[slot] = x[i]
                self._y[slot] = y[i]
            self.seen += 1

    def _slot(self) -> int | None:
        """Algorithm R's choice for the sample of index ``seen``: a slot, or None (dropped)."""
        t = self.seen
        if t < self.capacity:
            return t
        j = int(np.random.default_rng([self.seed, t]).integers(0, t + 1))
        return j if j < self.capacity else None

    def save(self, path: str | Path) -> Path:
        """Write the buffer to ``path`` (.npz) atomically; returns the path.

        Raises:
            ConfigError: the file cannot be written.
        """
        target = Path(path)
        buf = io.BytesIO()
        np.savez(
            buf,
            x=self.x,
            y=self.y,
            seen=np.int64(self.seen),
            seed=np.int64(self.seed),
            capacity=np.int64(self.capacity),
        )
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(target, buf.getvalue())
        except OSError as exc:
            raise ConfigError(
                f"cannot write the replay buffer to {str(target)!r}: {exc.strerror or exc}",
                hint="pass a writable replay file path",
            ) from exc
        return target


def load_replay(
    path: str | Path, capacity: int, sample_shape: tuple[int, ...], seed: int = 0
) -> ReplayBuffer:
    """The buffer saved at ``path``, or an empty one when the file does not exist yet.

    A saved buffer larger than ``capacity`` is cut down to a uniform sub-sample (the first
    ``capacity`` slots of a uniform reservoir are themselves uniform).

    Raises:
        UntrustedArtifactError: the file is not a replay buffer, or its samples do not have
            ``sample_shape``.
    """
    p = Path(path)
    buffer = ReplayBuffer(capacity, sample_shape, seed)
    if not p.exists():
        return buffer
    try:
        with np.load(p, allow_pickle=False) as npz:
            x, y = npz["x"].astype(np.float32), npz["y"].astype(np.int64)
            seen, saved_seed = int(npz["seen"]), int(npz["seed"])
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise UntrustedArtifactError(
            f"{str(p)!r} is not a replay buffer file ({exc})",
            hint="delete it to start an empty buffer",
        ) from exc
    if tuple(x.shape[1:]) != sample_shape or len(x) != len(y) or seen < len(y):
        raise UntrustedArtifactError(
            f"replay buffer {str(p)!r} holds samples of shape {x.shape[1:]} (seen {seen}); "
            f"the model takes {sample_shape}",
            hint="a buffer belongs to one model's input; delete it or pass another --replay file",
        )
    keep = min(len(y), capacity)
    buffer = ReplayBuffer(capacity, sample_shape, saved_seed)
    buffer._x[:keep], buffer._y[:keep] = x[:keep], y[:keep]
    # Each of the ``seen`` samples is in the kept slots with probability capacity / seen: the
    # reservoir's invariant, so Algorithm R goes on from ``seen``.
    buffer.seen = seen
    return buffer
