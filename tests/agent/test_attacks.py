"""Attacks on the node's updates, each named for what it stops (python-tuf's habit).

Every test starts from a node that committed version 1, lets the repository (or a man in the
middle) serve the attack for version 2, and asserts the node's active model is unchanged
afterwards: same slot, same file, same hash, and the updater idle.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.agent.conftest import Node
from tests.agent.fleet_stub import NODE_ID, deployment_doc, publish
from tests.fleet_tuf import (
    expired_timestamp,
    forge_targets,
    fresh_signer,
    mix_and_match,
    old_metadata,
    target_url_path,
)

from edgeloop.agent.slots import sha256_file
from edgeloop.agent.update_state import Outcome, UpdateState
from edgeloop.core.errors import UntrustedArtifactError

V2 = "artifacts/linear-2.onnx"


def _unchanged(node: Node, v1: Path) -> None:
    active = node.active()
    assert active is not None and (active.slot, active.version) == ("a", 1)
    assert sha256_file(active.file) == sha256_file(v1) == active.sha256
    assert node.updater.record.state is UpdateState.IDLE
    assert not list(node.home.downloads.glob("*.part")), "a refused download left its part"


def test_tampered_artifact(node_on_v1: Node, models: dict[int, Path]) -> None:
    publish(node_on_v1.stub.repo, models[2], 2, version=2)
    tampered = bytearray(models[2].read_bytes())
    tampered[len(tampered) // 2] ^= 0x01  # one bit, same length
    node_on_v1.stub.overrides[target_url_path(node_on_v1.stub.repo, V2)] = bytes(tampered)
    assert node_on_v1.update() is Outcome.ROLLED_BACK
    assert "TUF verification failed" in (node_on_v1.updater.record.error or "")
    _unchanged(node_on_v1, models[1])


def test_truncated_download(node_on_v1: Node, models: dict[int, Path]) -> None:
    publish(node_on_v1.stub.repo, models[2], 2, version=2)
    cut = models[2].read_bytes()[:-17]
    node_on_v1.stub.overrides[target_url_path(node_on_v1.stub.repo, V2)] = cut
    assert node_on_v1.update() is Outcome.ROLLED_BACK
    assert f"sent {len(cut)} of the signed" in (node_on_v1.updater.record.error or "")
    _unchanged(node_on_v1, models[1])


def test_endless_data(node_on_v1: Node, models: dict[int, Path]) -> None:
    publish(node_on_v1.stub.repo, models[2], 2, version=2)
    signed = models[2].stat().st_size
    endless = models[2].read_bytes() + b"\0" * (8 * 1024 * 1024)  # 8 MiB past the signed size
    node_on_v1.stub.overrides[target_url_path(node_on_v1.stub.repo, V2)] = endless
    assert node_on_v1.update() is Outcome.ROLLED_BACK
    assert "more" in (node_on_v1.updater.record.error or "")
    assert str(signed) in (node_on_v1.updater.record.error or "")
    _unchanged(node_on_v1, models[1])


def test_rollback_attack(node_on_v1: Node, models: dict[int, Path]) -> None:
    repo = node_on_v1.stub.repo
    seen = repo.versions()["timestamp"]  # the node trusts this timestamp version now
    publish(repo, models[2], 2, version=2)
    node_on_v1.stub.overrides["metadata/timestamp.json"] = old_metadata(repo, "timestamp", seen - 1)
    with pytest.raises(UntrustedArtifactError, match="BadVersionNumberError"):
        node_on_v1.update()
    _unchanged(node_on_v1, models[1])


def test_rollback_attack_to_an_older_signed_deployment(
    node_on_v1: Node, models: dict[int, Path]
) -> None:
    """The whole older repository state, every file genuinely signed, served back."""
    repo = node_on_v1.stub.repo
    publish(repo, models[2], 2, version=2)
    assert node_on_v1.update() is Outcome.COMMITTED  # now on version 2 in slot b
    versions = repo.versions()
    for role in ("timestamp", "snapshot", "targets"):
        older = old_metadata(repo, role, versions[role] - 1)
        name = "timestamp.json" if role == "timestamp" else f"{versions[role]}.{role}.json"
        node_on_v1.stub.overrides[f"metadata/{name}"] = older
    with pytest.raises(UntrustedArtifactError):
        node_on_v1.update()
    active = node_on_v1.active()
    assert active is not None and (active.slot, active.version) == ("b", 2)


def test_freeze_attack(node_on_v1: Node, models: dict[int, Path]) -> None:
    repo = node_on_v1.stub.repo
    publish(repo, models[2], 2, version=2)
    node_on_v1.stub.overrides["metadata/timestamp.json"] = expired_timestamp(repo)
    with pytest.raises(UntrustedArtifactError, match="ExpiredMetadataError"):
        node_on_v1.update()
    _unchanged(node_on_v1, models[1])


def test_mix_and_match_metadata(node_on_v1: Node, models: dict[int, Path]) -> None:
    repo = node_on_v1.stub.repo
    old_targets = repo.versions()["targets"]
    publish(repo, models[2], 2, version=2)
    node_on_v1.stub.overrides.update(mix_and_match(repo, old_targets))
    with pytest.raises(UntrustedArtifactError, match="TUF"):
        node_on_v1.update()
    _unchanged(node_on_v1, models[1])


def test_deployment_signed_with_wrong_key(node_on_v1: Node, models: dict[int, Path]) -> None:
    repo = node_on_v1.stub.repo
    target, doc = deployment_doc(models[3], 2, version=3)
    forged = forge_targets(
        repo, {f"deployments/{NODE_ID}.json": doc, target: models[3].read_bytes()}, fresh_signer()
    )
    node_on_v1.stub.overrides.update(forged)
    with pytest.raises(UntrustedArtifactError, match="UnsignedMetadataError"):
        node_on_v1.update()
    _unchanged(node_on_v1, models[1])


def test_deployment_for_another_node(node_on_v1: Node, models: dict[int, Path]) -> None:
    """A genuinely signed document, but naming another node: refused before any download."""
    repo = node_on_v1.stub.repo
    target, doc = deployment_doc(models[2], 2, version=2, node_id="node-2")
    repo.publish_targets({target: models[2], f"deployments/{NODE_ID}.json": doc})
    with pytest.raises(UntrustedArtifactError, match="node_id"):
        node_on_v1.update()
    _unchanged(node_on_v1, models[1])
