"""Fixtures of the agent's tests: a signed repository behind the control plane's node API, and
an in-process agent (record, slots, TUF client) against it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.agent.fleet_stub import NODE_ID, NODE_TOKEN, ControlStub, new_repository, publish
from tests.tiny_models import make_linear_onnx

from edgeloop.agent.deployment import parse_deployment
from edgeloop.agent.fetcher import HttpxFetcher
from edgeloop.agent.home import AgentHome
from edgeloop.agent.slots import SlotModel
from edgeloop.agent.tuf_client import TufSession, store_root
from edgeloop.agent.update_state import Outcome
from edgeloop.agent.updater import Updater


@pytest.fixture
def stub(tmp_path: Path) -> Iterator[ControlStub]:
    with ControlStub(new_repository(tmp_path / "repo")) as server:
        yield server


@pytest.fixture
def models(tmp_path: Path) -> dict[int, Path]:
    """Two versions of a tiny classifier (different weights, same interface)."""
    folder = tmp_path / "models"
    folder.mkdir()
    return {v: make_linear_onnx(folder / f"linear-{v}.onnx", seed=v) for v in (1, 2, 3)}


@dataclass
class Node:
    """An agent's state on disk and its updater, driven in-process (no server)."""

    home: AgentHome
    updater: Updater
    stub: ControlStub

    def session(self) -> TufSession:
        fetcher = HttpxFetcher(NODE_TOKEN, self.home.downloads, self.stub.targets_url)
        return TufSession(self.home, self.stub.metadata_url, self.stub.targets_url, fetcher)

    def update(self) -> Outcome:
        """One reconcile step by hand: refresh TUF, get the document, run the updater.

        Raises:
            What the TUF refresh or the document fetch raise (before the updater starts).
        """
        session = self.session()
        try:
            document = session.document(f"deployments/{NODE_ID}.json")
            deployment = parse_deployment(document, NODE_ID)
            return asyncio.run(self.updater.run(deployment, document, session))
        finally:
            session.fetcher.close()

    def active(self) -> SlotModel | None:
        slots = self.updater.slots
        return slots.read(slots.active_name())


@pytest.fixture
def node(tmp_path: Path, stub: ControlStub) -> Node:
    home = AgentHome.under(tmp_path / "node")
    store_root(home, stub.repo.root_bytes(), "the test's repository")
    return Node(home, Updater(home), stub)


@pytest.fixture
def node_on_v1(node: Node, models: dict[int, Path]) -> Node:
    """A node that committed version 1 (revision 1)."""
    publish(node.stub.repo, models[1], 1, version=1)
    assert node.update() is Outcome.COMMITTED
    return node
