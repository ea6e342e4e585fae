"""Each local agent's own share of a bundled data set, for federated demos and benchmarks.

``edgeloop fleet up --fl-data digits --partition iid|dirichlet:ALPHA --fl-seed S`` writes
``NODE_HOME/agent/fl/data.npz`` before the agent starts; the agent's federated worker
(:mod:`edgeloop.agent.fl_worker`) trains on that file and nothing else.

The split is issue 14's protocol: ``train_test_split(test_size=0.2, random_state=42,
stratify=y)``, then the train part is partitioned across the nodes by
:class:`edgeloop.federated.partition.Partition` (seed S) and the test part is cut into equal
consecutive shares, so the nodes' test shares together are exactly the held-out set: the
federated evaluation of a global model weighted by test samples is its accuracy on that set.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edgeloop.core.errors import ConfigError, require
from edgeloop.core.files import write_atomic
from edgeloop.federated.partition import Partition

FILE = Path("agent") / "fl" / "data.npz"  # under the node's EDGELOOP home
TEST_SIZE, SPLIT_SEED = 0.2, 42


@dataclass(frozen=True, slots=True)
class NodeShare:
    """One node's arrays: its train part and its share of the held-out set."""

    client_id: int
    x_train: npt.NDArray[np.float32]
    y_train: npt.NDArray[np.int64]
    x_test: npt.NDArray[np.float32]
    y_test: npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class FlData:
    """A bundled data set, the partition and its seed: what ``--fl-data`` asks for."""

    dataset: str
    partition: Partition
    seed: int = 42

    def shares(self, nodes: int) -> list[NodeShare]:
        """Every node's share (node i gets client id i).

        Raises:
            NotFoundError: unknown data set. ConfigError: fewer samples than nodes.
        """
        from edgeloop.data.bundled import load_bundled

        data = load_bundled(self.dataset)
        model_selection = require("sklearn.model_selection", "datasets", "splitting --fl-data")
        x_tr, x_te, y_tr, y_te = model_selection.train_test_split(
            data.x, data.y, test_size=TEST_SIZE, random_state=SPLIT_SEED, stratify=data.y
        )
        if len(y_te) < nodes:
            raise ConfigError(f"{self.dataset} has {len(y_te)} test samples for {nodes} nodes")
        parts = self.partition.split(y_tr, nodes, self.seed)
        tests = np.array_split(np.arange(len(y_te)), nodes)
        return [
            NodeShare(i, x_tr[p], y_tr[p], x_te[t], y_te[t])
            for i, (p, t) in enumerate(zip(parts, tests, strict=True))
        ]

    def write(self, homes: list[Path]) -> list[Path]:
        """Write node i's share to ``homes[i] / FILE`` (atomically); returns the files."""
        written = []
        for home, share in zip(homes, self.shares(len(homes)), strict=True):
            path = home / FILE
            path.parent.mkdir(parents=True, exist_ok=True)
            meta = {"dataset": self.dataset, "partition": str(self.partition), "seed": self.seed,
                    "client_id": share.client_id, "nodes": len(homes)}  # fmt: skip
            tmp = path.with_suffix(".tmp.npz")
            np.savez(
                tmp,
                x_train=share.x_train,
                y_train=share.y_train,
                x_test=share.x_test,
                y_test=share.y_test,
                meta=np.array(json.dumps(meta)),
            )
            write_atomic(path, tmp.read_bytes())
            tmp.unlink()
            written.append(path)
        return written
