"""Secure aggregation: exact unmasking under dropouts, masked vectors only, clear failures."""

from __future__ import annotations

import numpy as np
import pytest

from edgeloop.core.errors import ConfigError, DataError, TransportError, UntrustedArtifactError
from edgeloop.federated.secagg import (
    FixedPoint,
    UnmaskRequest,
    advertise,
    fedavg_from_sum,
    mask_input,
    route_shares,
    run_round,
    share_keys,
    unmask_response,
    weighted_input,
)

FP = FixedPoint(frac_bits=24)
N, T, DIM = 10, 6, 300


def plain_inputs(seed: int = 0) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {i: rng.normal(0.0, 1.0, DIM) for i in range(1, N + 1)}


def encoded(plain: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    return {i: FP.encode(x, N) for i, x in plain.items()}


def test_fixed_point_error_bound_holds_for_a_sum() -> None:
    plain = plain_inputs()
    total = sum((v for v in encoded(plain).values()), start=np.zeros(DIM, np.uint64))
    err = np.abs(FP.decode(total) - sum(plain.values()))
    assert err.max() <= FP.error_bound(N) == N * 2.0**-25


def test_fixed_point_refuses_values_the_ring_cannot_hold() -> None:
    with pytest.raises(DataError, match="does not fit a sum over 10 clients"):
        FP.encode([FP.limit(10)], 10)
    with pytest.raises(DataError, match="NaN"):
        FP.encode([np.nan], 10)


def test_no_dropout_unmasks_the_exact_sum() -> None:
    plain = plain_inputs()
    total, _ = run_round(encoded(plain), T)
    np.testing.assert_array_equal(total, sum(encoded(plain).values(), np.zeros(DIM, np.uint64)))
    assert np.abs(FP.decode(total) - sum(plain.values())).max() <= FP.error_bound(N)


@pytest.mark.parametrize("dropped", [(3,), (2, 5, 9), (1, 10, 4, 7)])
def test_clients_dropping_before_their_masked_input_are_left_out_exactly(
    dropped: tuple[int, ...],
) -> None:
    plain = plain_inputs(1)
    total, masked = run_round(encoded(plain), T, drop_before_masking=dropped)
    expected = sum(x for i, x in plain.items() if i not in dropped)
    assert set(masked) == set(plain) - set(dropped)
    assert np.abs(FP.decode(total) - expected).max() <= FP.error_bound(N)


def test_clients_dropping_after_masking_stay_in_the_sum() -> None:
    # 3 of 10 vanish after sending y_u (n - t = 4 may): the other 7 recover their self masks
    plain = plain_inputs(2)
    total, _ = run_round(encoded(plain), T, drop_after_masking=(1, 4, 8))
    assert np.abs(FP.decode(total) - sum(plain.values())).max() <= FP.error_bound(N)


def test_mixed_dropouts_up_to_n_minus_t() -> None:
    plain = plain_inputs(3)
    total, _ = run_round(encoded(plain), T, drop_before_masking=(2, 3), drop_after_masking=(5, 6))
    expected = sum(x for i, x in plain.items() if i not in (2, 3))
    assert np.abs(FP.decode(total) - expected).max() <= FP.error_bound(N)


def test_what_the_server_receives_is_masked_not_the_update() -> None:
    plain = plain_inputs(4)
    _, masked = run_round(encoded(plain), T)
    for i, m in masked.items():
        seen = FP.decode(m.vector)
        assert abs(np.corrcoef(seen, plain[i])[0, 1]) < 0.25  # ~N(0, 1/300): sd 0.058
        assert np.abs(seen).mean() > 1e9  # uniform over the ring, not values near 1
        # uniform uint64: the top bit is set about half the time
        assert 0.35 < float(np.mean(m.vector >= np.uint64(2**63))) < 0.65


def test_fewer_than_t_survivors_is_a_clear_error() -> None:
    with pytest.raises(TransportError, match="fewer than t=6"):
        run_round(encoded(plain_inputs()), T, drop_before_masking=(1, 2, 3, 4, 5))
    with pytest.raises(TransportError, match="4 clients answered the unmasking request"):
        run_round(encoded(plain_inputs()), T, drop_after_masking=(1, 2, 3, 4, 5, 6))


def test_a_client_never_reveals_both_seeds_of_one_peer() -> None:
    with pytest.raises(ConfigError, match="both survivors and dropped"):
        UnmaskRequest(frozenset({1, 2}), frozenset({2}))


def test_a_tampered_share_fails_authentication() -> None:
    s1, a1 = advertise(1)
    s2, a2 = advertise(2)
    inbox = route_shares([share_keys(s1, [a1, a2], 2), share_keys(s2, [a1, a2], 2)])[2]
    bad = {1: inbox[1][:-1] + bytes([inbox[1][-1] ^ 1]), 2: inbox[2]}
    mask_input(s2, [a1, a2], bad, np.zeros(3, np.uint64))
    with pytest.raises(UntrustedArtifactError, match="from client 1 to 2"):
        unmask_response(s2, [a1, a2], bad, UnmaskRequest(frozenset({1, 2}), frozenset()), 2)


def test_secure_fedavg_equals_plain_fedavg_within_the_bound() -> None:
    rng = np.random.default_rng(5)
    weights = {i: rng.normal(0, 0.5, 50) for i in range(1, 6)}
    counts = {i: 100 + 10 * i for i in weights}
    inputs = {i: weighted_input(weights[i], counts[i], FP, 5) for i in weights}
    total, _ = run_round(inputs, 3, drop_after_masking=(2,))
    mean, samples = fedavg_from_sum(total, FP)
    expected = sum(counts[i] * weights[i] for i in weights) / sum(counts.values())
    assert samples == sum(counts.values())
    assert np.abs(mean - expected).max() <= FP.error_bound(5) / samples


def test_shares_from_a_client_without_keys_are_refused() -> None:
    s1, a1 = advertise(1)
    _, a2 = advertise(2)
    inbox = route_shares([share_keys(s1, [a1, a2], 2)])[1]
    with pytest.raises(ConfigError, match=r"shares from clients \[7\]"):
        mask_input(s1, [a1, a2], {**inbox, 7: b"x"}, np.zeros(3, np.uint64))
