"""One local fleet (a control plane and two agents as processes, named as on a site:
node-camera-1 and node-gateway-1) shared by the SDK tests, so the start-up is paid once. Each
agent holds an iid share of the digits set for federated rounds. Tests deploy only what their
assertions are about."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from edgeloop.federated.partition import Partition
from edgeloop.sdk.fl_data import FlData
from edgeloop.sdk.local_fleet import LocalFleet, up

NODES = ("node-camera-1", "node-gateway-1")


@pytest.fixture(scope="session")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFleet]:
    args = ["--poll-s", "0.5", "--metrics-every-s", "1"]
    shares = FlData("digits", Partition.parse("iid"))
    with up(tmp_path_factory.mktemp("fleet"), 2, agent_args=args, names=NODES,
            fl_data=shares) as running:  # fmt: skip
        yield running
