"""train_local's hand-written SGD step: bit-identical to torch.optim.SGD, and no torch._dynamo.

torch.optim.SGD.step imports torch._dynamo on first use (~70-80 MB private per training worker,
issue 14); train_local steps the parameters itself. These tests pin both halves of that trade.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edgeloop.training.federated_client import (  # noqa: E402
    LocalSGD,
    digits_cnn,
    get_weights,
    set_weights,
    train_local,
)


def _with_torch_optim(
    model: torch.nn.Module, weights: np.ndarray, x: torch.Tensor, y: torch.Tensor, seed: int,
    config: LocalSGD,
) -> float:  # fmt: skip
    """train_local's loop as it was with torch.optim.SGD (the reference); the mean loss."""
    set_weights(model, weights)
    anchor = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=config.lr)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    seen, loss_sum = 0, 0.0
    for _ in range(config.epochs):
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), config.batch_size):
            idx = order[start : start + config.batch_size]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            if config.mu > 0:
                prox = sum(
                    ((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchor, strict=True)
                )
                loss = loss + 0.5 * config.mu * prox
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(idx)
            seen += len(idx)
    return loss_sum / seen


@pytest.mark.parametrize("mu", [0.0, 0.5])
def test_the_written_out_step_is_bit_identical_to_torch_optim_sgd(mu: float) -> None:
    torch.manual_seed(0)
    ours, theirs = digits_cnn(), digits_cnn()
    start = get_weights(ours)
    gen = torch.Generator().manual_seed(7)
    x, y = torch.rand(40, 1, 8, 8, generator=gen), torch.randint(0, 10, (40,), generator=gen)
    # 3 epochs of batches 16, 16, 8: 9 steps, the last batch of each epoch short
    config = LocalSGD(lr=0.1, epochs=3, batch_size=16, mu=mu)
    update = train_local(ours, start, x, y, node_id="n", round=1, seed=1003, config=config)
    loss = _with_torch_optim(theirs, start, x, y, 1003, config)
    assert not np.array_equal(update.weights, start)  # it trained
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(a, b)
    assert update.metrics["loss"] == loss


def test_a_training_worker_round_leaves_torch_dynamo_unimported(tmp_path: Path) -> None:
    """The worker's own path (Node.warm_up, then a train answer, one without a budget and one
    stopped by it), in a fresh interpreter: torch._dynamo is never imported."""
    gen = np.random.default_rng(0)
    np.savez(
        tmp_path / "data.npz",
        x_train=gen.random((48, 1, 8, 8), dtype=np.float32),
        y_train=gen.integers(0, 10, 48),
        x_test=gen.random((16, 1, 8, 8), dtype=np.float32),
        y_test=gen.integers(0, 10, 16),
    )
    script = textwrap.dedent(
        """
        import json, sys
        from pathlib import Path
        import numpy as np
        from edgeloop.training.federated_worker import Node
        from edgeloop.training.federated_client import get_weights
        tmp = Path(sys.argv[1])
        before = "torch._dynamo" in sys.modules
        node = Node(tmp / "data.npz")
        node.warm_up()
        np.asarray(get_weights(node.model("digits-cnn")), "<f4").tofile(tmp / "w.f32")
        ask = {"kind": "train", "model": "digits-cnn", "weights": str(tmp / "w.f32"),
               "round": 2, "client_id": 3, "out": str(tmp / "out.f32"),
               "local": {"lr": 0.05, "epochs": 2, "batch_size": 16, "mu": 0.1}}
        full = node.answer({**ask, "budget": {"cpu_s": None, "wall_s": None}})
        cut = node.answer({**ask, "budget": {"cpu_s": 1e-9, "wall_s": None}})
        print(json.dumps({"before": before, "after": "torch._dynamo" in sys.modules,
                          "samples": [full["num_samples"], cut["num_samples"]]}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["samples"] == [48, 16]  # trained on all, then stopped after one batch
    assert got == {"before": False, "after": False, "samples": [48, 16]}
