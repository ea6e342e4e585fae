"""The torch client step: weights round-trip, local SGD returns a well-formed update."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edgeloop.federated import ClientUpdate, FedAvg, ServerState  # noqa: E402
from edgeloop.training.federated_client import (  # noqa: E402
    LocalSGD,
    digits_cnn,
    evaluate,
    get_weights,
    layout,
    set_weights,
    train_local,
)


def test_weights_round_trip_and_the_layout_names_every_parameter() -> None:
    torch.manual_seed(0)
    model = digits_cnn()
    w = get_weights(model)
    assert w.size == layout(model).size == 16 * 9 + 16 + 32 * 16 * 9 + 32 + 512 * 10 + 10
    set_weights(model, np.zeros_like(w))
    assert not get_weights(model).any()
    set_weights(model, w)
    np.testing.assert_array_equal(get_weights(model), w.astype(np.float32))


def test_local_sgd_is_seeded_and_fedavg_of_one_client_is_its_model() -> None:
    torch.manual_seed(0)
    model = digits_cnn()
    start = get_weights(model)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.rand(40, 1, 8, 8, generator=gen), torch.randint(0, 10, (40,), generator=gen)
    cfg = LocalSGD(lr=0.05, batch_size=16)
    a = train_local(model, start, x, y, node_id="n1", round=2, seed=2001, config=cfg)
    b = train_local(model, start, x, y, node_id="n1", round=2, seed=2001, config=cfg)
    assert isinstance(a, ClientUpdate) and a.num_samples == 40 and a.round == 2
    np.testing.assert_array_equal(a.weights, b.weights)
    assert not np.array_equal(a.weights, start) and np.isfinite(a.metrics["loss"])
    prox = train_local(model, start, x, y, node_id="n1", round=2, seed=2001,
                       config=LocalSGD(lr=0.05, batch_size=16, mu=10.0))  # fmt: skip
    # the proximal term pulls the local model towards the global one
    assert np.linalg.norm(prox.weights - start) < np.linalg.norm(a.weights - start)
    out = FedAvg().aggregate(start, [a], ServerState())
    np.testing.assert_allclose(out.weights, a.weights)
    set_weights(model, out.weights)
    loss, acc = evaluate(model, x, y)
    assert loss > 0 and 0.0 <= acc <= 1.0
