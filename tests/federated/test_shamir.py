"""Shamir t-of-n sharing: any t shares reconstruct; t-1 shares fit every secret."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeloop.core.errors import ConfigError, TransportError
from edgeloop.federated.secagg.shamir import PRIME, interpolate_at, reconstruct, split

secrets_ = st.integers(0, 2**256 - 1)


@st.composite
def sharing(draw: st.DrawFn) -> tuple[int, int, dict[int, int], random.Random]:
    n = draw(st.integers(1, 12))
    t = draw(st.integers(1, n))
    secret = draw(secrets_)
    rng = random.Random(draw(st.integers(0, 2**32)))
    return secret, t, split(secret, t, range(1, n + 1), rng.randrange), rng


@given(sharing())
def test_any_t_shares_reconstruct_the_secret(
    case: tuple[int, int, dict[int, int], random.Random],
) -> None:
    secret, t, shares, rng = case
    subset = rng.sample(sorted(shares), t)
    assert reconstruct({x: shares[x] for x in subset}, t) == secret


@given(sharing(), secrets_)
def test_t_minus_1_shares_are_consistent_with_every_secret(
    case: tuple[int, int, dict[int, int], random.Random], other: int
) -> None:
    _, t, shares, rng = case
    known = {x: shares[x] for x in rng.sample(sorted(shares), t - 1)}
    # a degree t-1 polynomial through the t-1 known shares and (0, other) exists for any other:
    # its value at a fresh point completes a valid t-share set that reconstructs to ``other``
    fresh = max(shares) + 1
    completed = {**known, fresh: interpolate_at({**known, 0: other}, fresh)}
    assert reconstruct(completed, t) == other


def test_shares_look_unrelated_to_the_secret() -> None:
    shares = split(42, 3, [1, 2, 3, 4, 5], random.Random(0).randrange)
    assert all(s != 42 and 0 <= s < PRIME for s in shares.values())


def test_fewer_than_t_shares_is_a_clear_error() -> None:
    shares = split(7, 3, [1, 2, 3], random.Random(1).randrange)
    with pytest.raises(TransportError, match="2 shares arrived, reconstruction needs"):
        reconstruct({1: shares[1], 2: shares[2]}, 3)


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ConfigError, match="threshold 4"):
        split(1, 4, [1, 2, 3])
    with pytest.raises(ConfigError, match="distinct"):
        split(1, 2, [0, 1])
