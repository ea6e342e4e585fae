"""From a sample of any shape to the few features the drift statistic watches.

A sample is flattened. Up to ``MAX_FEATURES`` values are watched as they are. Wider samples
(images, long windows) are standardised per value with the reference and folded into
``MAX_FEATURES`` signed buckets (feature hashing: Weinberger et al., ICML 2009, a sparse random
projection that keeps means and distances on average): ``O(values)`` per sample, and the map is
``values`` bytes of bucket ids plus signs, so memory stays small for large inputs. The buckets
and signs come from a seeded generator at fit time and are stored, so a node rebuilds the same
map without the seed's generator version mattering.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edgeloop.core.errors import DataError

F64 = npt.NDArray[np.float64]

# The statistic's cost and state grow with the square of its width; 64 covers digits' 8x8
# pixels and a 64-point window as they are.
MAX_FEATURES = 64


@dataclass(frozen=True, slots=True, eq=False)
class FeatureMap:
    """Flatten (and for wide samples hash) samples of ``sample_shape`` to ``width`` features."""

    sample_shape: tuple[int, ...]
    # Set only when the sample has more than MAX_FEATURES values.
    # Compact types: a profile ships to every node (uint8 bucket ids, int8 signs, float32).
    bucket: npt.NDArray[np.uint8] | None = None
    sign: npt.NDArray[np.int8] | None = None
    centre: npt.NDArray[np.float32] | None = None
    scale: npt.NDArray[np.float32] | None = None

    def __post_init__(self) -> None:
        if not self.sample_shape or any(s < 1 for s in self.sample_shape):
            raise DataError(f"sample shape {self.sample_shape}, expected positive dimensions")
        hashed = [a is not None for a in (self.bucket, self.sign, self.centre, self.scale)]
        if any(hashed) and not all(hashed):
            raise DataError("a hashed feature map needs bucket, sign, centre and scale together")
        if all(hashed) and self.values <= MAX_FEATURES:
            raise DataError(f"{self.values} values need no hashing (at most {MAX_FEATURES})")

    @property
    def values(self) -> int:
        return int(np.prod(self.sample_shape))

    @property
    def hashed(self) -> bool:
        return self.bucket is not None

    @property
    def width(self) -> int:
        return MAX_FEATURES if self.hashed else self.values

    @classmethod
    def fit(cls, reference: F64, seed: int = 0) -> FeatureMap:
        """The map for a reference array ``(n, *sample_shape)``."""
        shape = tuple(int(s) for s in reference.shape[1:])
        flat = reference.reshape(reference.shape[0], -1)
        d = flat.shape[1]
        if d <= MAX_FEATURES:
            return cls(sample_shape=shape)
        # Seeded: the projection is part of the profile and must not change between fits.
        rng = np.random.default_rng(seed)
        bucket = rng.permutation(d) % MAX_FEATURES  # every bucket gets >= 1 value
        sign = rng.choice(np.array([-1, 1], dtype=np.int8), size=d)
        scale = flat.std(axis=0)
        return cls(
            sample_shape=shape,
            bucket=bucket.astype(np.uint8),
            sign=sign,
            centre=flat.mean(axis=0).astype(np.float32),
            scale=np.where(scale > 0, scale, 1.0).astype(np.float32),
        )

    def check(self, x: npt.NDArray[np.generic], *, batch: bool) -> None:
        """Raise ``DataError`` unless ``x`` is one sample (or a batch) of ``sample_shape``."""
        want = self.sample_shape
        got = tuple(x.shape[1:]) if batch else tuple(x.shape)
        if got != want or (batch and x.ndim != len(want) + 1):
            what = "samples" if batch else "a sample"
            raise DataError(
                f"{what} of shape {tuple(x.shape)} given; the reference's samples have shape "
                f"{want}",
                hint="send samples shaped like the reference the monitor was fitted on",
            )

    def rows(self, flat: F64) -> F64:
        """Flattened samples ``(m, values)`` -> features ``(m, width)``."""
        if self.bucket is None or self.sign is None or self.centre is None or self.scale is None:
            return flat
        u = (flat - self.centre) / self.scale * self.sign
        order = np.argsort(self.bucket, kind="stable")
        starts = np.searchsorted(self.bucket[order], np.arange(MAX_FEATURES))
        return np.add.reduceat(u[:, order], starts, axis=1)
