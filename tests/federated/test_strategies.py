"""Each strategy against values computed by hand on two-coordinate models."""

from __future__ import annotations

import numpy as np
import pytest

from edgeloop.core.errors import ConfigError, NotFoundError
from edgeloop.federated import (
    STRATEGIES,
    ClientUpdate,
    CoordinateMedian,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedProx,
    FedYogi,
    ServerOptimizer,
    ServerState,
    TrimmedMean,
    proximal_gradient,
    proximal_term,
)


def up(node: str, n: int, *w: float) -> ClientUpdate:
    return ClientUpdate(node_id=node, round=1, num_samples=n, weights=np.array(w))


ZERO = np.zeros(2)
TWO = [up("a", 1, 1.0, 2.0), up("b", 3, 3.0, 6.0)]


def test_fedavg_weights_by_samples() -> None:
    # (1*[1,2] + 3*[3,6]) / 4 = [2.5, 5.0]
    out = FedAvg().aggregate(ZERO, TWO, ServerState())
    np.testing.assert_allclose(out.weights, [2.5, 5.0])
    assert (out.num_clients, out.num_samples, out.state.step) == (2, 4, 1)


def test_fedprox_server_side_is_fedavg_and_its_client_term_is_mu_half_squared_distance() -> None:
    out = FedProx(mu=0.1).aggregate(ZERO, TWO, ServerState())
    np.testing.assert_allclose(out.weights, [2.5, 5.0])
    w, g = np.array([1.0, 3.0]), np.array([0.0, 1.0])
    assert proximal_term(w, g, 0.1) == pytest.approx(0.05 * (1 + 4))
    np.testing.assert_allclose(proximal_gradient(w, g, 0.1), [0.1, 0.2])
    with pytest.raises(ConfigError, match="mu"):
        FedProx(mu=-1.0)


def test_fedavgm_accumulates_server_momentum() -> None:
    s = FedAvgM(lr=1.0, momentum=0.5)
    first = s.aggregate(ZERO, TWO, ServerState())
    np.testing.assert_allclose(first.weights, [2.5, 5.0])  # v = D = [2.5, 5]
    # clients answer the same weights: D = 0, v = 0.5*[2.5, 5], x = [2.5, 5] + v
    second = s.aggregate(first.weights, TWO, first.state)
    np.testing.assert_allclose(second.weights, [3.75, 7.5])
    np.testing.assert_allclose(second.state.m, [1.25, 2.5])


def test_fedavgm_without_momentum_is_fedavg() -> None:
    out = FedAvgM(lr=1.0, momentum=0.0).aggregate(ZERO, TWO, ServerState())
    np.testing.assert_allclose(out.weights, [2.5, 5.0])


OPT = ServerOptimizer(lr=0.1, beta1=0.9, beta2=0.99, tau=1e-3)


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        # step 1: D=1, m=0.1, v=0.99*1e-6 + 0.01 = 0.01000099, x = 0.1*m/(sqrt(v)+1e-3)
        # step 2: D=-0.5, m=0.09-0.05=0.04, v=0.99*v+0.0025
        (FedAdam(OPT), [(0.0990050488825424, 0.010000990), (0.1346050053529748, 0.0124009801)]),
        # Yogi: v = v - 0.01*D^2*sign(v - D^2): 1e-6 + 0.01 = 0.010001, then + 0.0025
        (FedYogi(OPT), [(0.0990049998750062, 0.010001000), (0.1344635185698879, 0.012501)]),
    ],
)
def test_adaptive_server_optimizers_follow_reddi_et_al_step_by_step(
    strategy: FedAdam | FedYogi, expected: list[tuple[float, float]]
) -> None:
    x, state = np.zeros(1), ServerState()
    for client_change, (want_x, want_v) in zip((1.0, -0.5), expected, strict=True):
        out = strategy.aggregate(x, [up("a", 5, float(x[0]) + client_change)], state)
        x, state = out.weights, out.state
        assert x[0] == pytest.approx(want_x, rel=1e-12)
        assert state.v is not None and state.v[0] == pytest.approx(want_v, rel=1e-9)
    assert state.m is not None and state.m[0] == pytest.approx(0.04)


POISONED = [up("a", 10, 1.0, 1.0), up("b", 10, 2.0, 2.0), up("c", 10, 3.0, 3.0)]
POISONED += [up("d", 10, 4.0, 4.0), up("evil", 1000, 1e6, -1e6)]


def test_median_ignores_one_poisoned_client() -> None:
    # per coordinate: sorted [1,2,3,4,1e6] -> 3 ; [-1e6,1,2,3,4] -> 2
    out = CoordinateMedian().aggregate(ZERO, POISONED, ServerState())
    np.testing.assert_allclose(out.weights, [3.0, 2.0])
    fedavg = FedAvg().aggregate(ZERO, POISONED, ServerState())
    assert abs(fedavg.weights[0]) > 9e5  # what the robust rules protect against


def test_trimmed_mean_drops_the_extremes_per_coordinate() -> None:
    # beta=0.2 on 5 clients: drop 1 each side -> mean(2,3,4)=3 ; mean(1,2,3)=2
    out = TrimmedMean(beta=0.2).aggregate(ZERO, POISONED, ServerState())
    np.testing.assert_allclose(out.weights, [3.0, 2.0])
    with pytest.raises(ConfigError, match="beta"):
        TrimmedMean(beta=0.5)


def test_registry_builds_by_name_and_lists_known_names_for_an_unknown_one() -> None:
    assert STRATEGIES.names() == (
        "dp-fedavg",
        "fedadam",
        "fedavg",
        "fedavgm",
        "fedprox",
        "fedyogi",
        "median",
        "trimmed-mean",
    )
    assert STRATEGIES.create("fedprox", mu=0.5) == FedProx(mu=0.5)
    assert STRATEGIES.create("fedadam", lr=0.1) == FedAdam(ServerOptimizer(lr=0.1))
    with pytest.raises(NotFoundError, match="known: dp-fedavg, fedadam, fedavg"):
        STRATEGIES.create("krum")
    with pytest.raises(ConfigError, match="'fedprox' does not take") as info:
        STRATEGIES.create("fedprox", momentum=0.9)
    assert info.value.hint == "its parameters: mu"


def test_aggregating_nothing_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="no accepted updates"):
        FedAvg().aggregate(ZERO, [], ServerState())
