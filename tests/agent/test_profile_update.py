"""The reference profile travels with the model: a second signed target of the version, fetched
and verified through the same TUF session and staged as ``model.profile.npz`` beside the model;
a profile that fails verification fails the update like a bad model (the old version keeps
serving, nothing of the new one is left); a version without a profile deploys as before."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from tests.agent.conftest import Node
from tests.agent.fleet_stub import NODE_ID, deployment_doc
from tests.fleet_tuf import target_url_path

from edgeloop.agent.slots import PROFILE_FILE, sha256_file
from edgeloop.agent.update_state import Outcome, UpdateState
from edgeloop.agent.updater import profile_target
from edgeloop.core.errors import UntrustedArtifactError
from edgeloop.monitoring import ReferenceProfile, build_profile

PROFILE_TARGET = "artifacts/linear-2.profile.npz"


@pytest.fixture(scope="module")
def profile() -> bytes:
    return build_profile(np.random.default_rng(0).standard_normal((60, 4))).to_bytes()


def _publish_with_profile(
    node: Node, model: Path, profile: bytes, *, says: bytes | None = None
) -> None:
    """Sign v2 (revision 2) and its profile; the document names ``says`` (default: the same)."""
    target, doc = deployment_doc(model, 2, version=2)
    named = profile if says is None else says
    body = json.loads(doc)
    body["models"][0]["profile"] = {"target": PROFILE_TARGET, "length": len(named),
                                    "sha256": hashlib.sha256(named).hexdigest()}  # fmt: skip
    document = json.dumps(body).encode()
    node.stub.repo.publish_targets(
        {target: model, PROFILE_TARGET: profile, f"deployments/{NODE_ID}.json": document}
    )


def _unchanged(node: Node, v1: Path) -> None:
    active = node.active()
    assert active is not None and (active.slot, active.version) == ("a", 1)
    assert sha256_file(active.file) == sha256_file(v1) == active.sha256
    assert not (active.file.parent / PROFILE_FILE).exists()
    assert node.updater.record.state is UpdateState.IDLE
    assert not list(node.home.downloads.glob("*.part")), "a refused download left its part"
    assert not list(node.home.downloads.glob("*.artifact")), "a refused download left its file"


def test_the_profile_is_staged_beside_the_model(
    node_on_v1: Node, models: dict[int, Path], profile: bytes
) -> None:
    _publish_with_profile(node_on_v1, models[2], profile)
    assert node_on_v1.update() is Outcome.COMMITTED
    active = node_on_v1.active()
    assert active is not None and active.version == 2
    staged = active.file.parent / PROFILE_FILE
    assert staged.read_bytes() == profile
    assert ReferenceProfile.from_bytes(staged.read_bytes()).sample_shape == (4,)
    assert not list(node_on_v1.home.downloads.glob("*.artifact"))


def test_tampered_profile(node_on_v1: Node, models: dict[int, Path], profile: bytes) -> None:
    _publish_with_profile(node_on_v1, models[2], profile)
    tampered = bytearray(profile)
    tampered[len(tampered) // 2] ^= 0x01  # one bit, same length
    url = target_url_path(node_on_v1.stub.repo, PROFILE_TARGET)
    node_on_v1.stub.overrides[url] = bytes(tampered)
    assert node_on_v1.update() is Outcome.ROLLED_BACK
    assert "TUF verification failed" in (node_on_v1.updater.record.error or "")
    _unchanged(node_on_v1, models[1])


def test_profile_the_signed_targets_do_not_vouch_for(
    node_on_v1: Node, models: dict[int, Path], profile: bytes
) -> None:
    other = build_profile(np.random.default_rng(9).standard_normal((60, 4))).to_bytes()
    _publish_with_profile(node_on_v1, models[2], profile, says=other)
    assert node_on_v1.update() is Outcome.ROLLED_BACK
    assert "the signed targets say" in (node_on_v1.updater.record.error or "")
    _unchanged(node_on_v1, models[1])


def test_a_malformed_profile_entry_is_refused() -> None:
    assert profile_target({"name": "x"}) is None
    for bad in ("p", {"target": "artifacts/p", "sha256": "ab", "length": 3},
                {"target": "artifacts/p", "sha256": "ab" * 32, "length": True},
                {"target": "artifacts/../r.json", "sha256": "ab" * 32, "length": 3}):  # fmt: skip
        with pytest.raises(UntrustedArtifactError, match="profile entry"):
            profile_target({"profile": bad})
