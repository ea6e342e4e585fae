"""Shamir t-of-n secret sharing over the prime field GF(2^521 - 1) (Shamir 1979).

A secret s is the constant term of a random polynomial f of degree t-1; share i is (i, f(i)).
Any t shares determine f (Lagrange interpolation) and so s = f(0); any t-1 shares are consistent
with every secret, so they reveal nothing. The Mersenne prime 2^521 - 1 exceeds the 256-bit
secrets SecAgg shares (X25519 private keys, PRG seeds).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence

from edgeloop.core.errors import ConfigError, TransportError

PRIME = 2**521 - 1
SHARE_BYTES = 66  # ceil(521 / 8)


def split(
    secret: int,
    threshold: int,
    xs: Sequence[int],
    random_below: Callable[[int], int] = secrets.randbelow,
) -> dict[int, int]:
    """Shares {x: f(x)} of ``secret`` for the nonzero field points ``xs``.

    ``random_below`` draws the polynomial's coefficients; keep the default (the OS CSPRNG)
    outside tests.

    Raises:
        ConfigError: threshold outside [1, len(xs)], repeated or zero points, secret out of range.
    """
    points = list(xs)
    if not 1 <= threshold <= len(points):
        raise ConfigError(f"threshold {threshold} must be in [1, {len(points)}] (the share count)")
    if len(set(points)) != len(points) or any(not 0 < x < PRIME for x in points):
        raise ConfigError(f"share points must be distinct and in (0, p), got {points}")
    if not 0 <= secret < PRIME:
        raise ConfigError("the secret must be an integer in [0, 2^521 - 1)")
    coeffs = [secret, *(random_below(PRIME) for _ in range(threshold - 1))]
    shares = {}
    for x in points:
        y = 0
        for c in reversed(coeffs):  # Horner: f(x) = (((c_{t-1} x + ...) x + c_1) x + c_0
            y = (y * x + c) % PRIME
        shares[x] = y
    return shares


def interpolate_at(points: Mapping[int, int], x: int) -> int:
    """f(x) for the unique polynomial of degree < len(points) through ``points`` (Lagrange)."""
    total = 0
    for xi, yi in points.items():
        num, den = 1, 1
        for xj in points:
            if xj != xi:
                num = num * (x - xj) % PRIME
                den = den * (xi - xj) % PRIME
        total = (total + yi * num * pow(den, -1, PRIME)) % PRIME
    return total


def reconstruct(shares: Mapping[int, int], threshold: int) -> int:
    """The secret f(0) from any ``threshold`` of the shares.

    Raises:
        TransportError: fewer than ``threshold`` shares arrived (too many clients dropped).
    """
    if len(shares) < threshold:
        raise TransportError(
            f"{len(shares)} shares arrived, reconstruction needs the threshold t={threshold}",
            hint="too many clients dropped out; the round must fail (or lower t for next round)",
        )
    chosen = dict(sorted(shares.items())[:threshold])
    return interpolate_at(chosen, 0)


def to_bytes(value: int) -> bytes:
    return value.to_bytes(SHARE_BYTES, "big")


def from_bytes(data: bytes) -> int:
    return int.from_bytes(data, "big")
