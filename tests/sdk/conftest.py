"""One local fleet (a control plane and two agents as processes) shared by the SDK tests, so
the start-up is paid once. Tests deploy only what their assertions are about: node-2 is left
without a model until the quantize test, which runs last."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from edgeloop.sdk.local_fleet import LocalFleet, up


@pytest.fixture(scope="session")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFleet]:
    args = ["--poll-s", "0.5", "--metrics-every-s", "1"]
    with up(tmp_path_factory.mktemp("fleet"), 2, agent_args=args) as running:
        yield running
