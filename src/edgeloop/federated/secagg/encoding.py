"""Fixed-point encoding of float vectors into the ring Z_(2^64), where masks cancel exactly.

encode(x) = round(x * 2^f) mod 2^64 (two's complement in uint64); numpy's uint64 addition wraps
mod 2^64, so a sum of encodings is the encoding of the sum of the rounded values. decode views
the ring element as a signed int64 and divides by 2^f.

Error bound: each coordinate is rounded to the nearest multiple of 2^-f, an error <= 2^-(f+1);
a sum over n clients is off by at most n * 2^-(f+1) per coordinate, provided the true sum
stays inside the representable range |sum| < 2^(63-f) (checked at encode time, per client, as
|x| * n < 2^(63-f)). With the default f = 24: 3.0e-8 per client and ±5.5e11 of range.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edgeloop.core.errors import ConfigError, DataError

Ring = npt.NDArray[np.uint64]


@dataclass(frozen=True, slots=True)
class FixedPoint:
    frac_bits: int = 24

    def __post_init__(self) -> None:
        if not 0 <= self.frac_bits <= 52:
            raise ConfigError(
                f"frac_bits must be in [0, 52] (float64 precision), got {self.frac_bits}"
            )

    @property
    def scale(self) -> float:
        return float(2**self.frac_bits)

    def limit(self, clients: int) -> float:
        """The largest |x| a client may send so that the sum over ``clients`` fits."""
        return 2.0 ** (63 - self.frac_bits) / clients

    def error_bound(self, clients: int) -> float:
        """Max |decoded sum - true sum| per coordinate: clients * 2^-(f+1)."""
        return clients * 2.0 ** -(self.frac_bits + 1)

    def encode(self, values: npt.ArrayLike, clients: int) -> Ring:
        """round(x * 2^f) as uint64 ring elements.

        Raises:
            DataError: a value is not finite or too large for a sum over ``clients``.
        """
        x = np.asarray(values, dtype=np.float64).reshape(-1)
        if not np.isfinite(x).all():
            raise DataError("cannot encode NaN or inf for secure aggregation")
        peak = float(np.abs(x).max(initial=0.0))
        if peak >= self.limit(clients):
            raise DataError(
                f"|x| = {peak:.3g} does not fit a sum over {clients} clients with "
                f"{self.frac_bits} fractional bits (limit {self.limit(clients):.3g})",
                hint="use fewer frac_bits, or clip/scale the update before masking",
            )
        return np.rint(x * self.scale).astype(np.int64).view(np.uint64)

    def decode(self, ring: Ring) -> npt.NDArray[np.float64]:
        """The float vector a (summed) ring vector stands for."""
        return np.asarray(ring, dtype=np.uint64).view(np.int64).astype(np.float64) / self.scale
