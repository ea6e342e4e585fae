"""Deploying a version whose inputs or outputs differ from the deployed one's is refused (409,
naming the tensors) unless forced: its clients would break (issue 18 item 6)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tests.control.harness import Control, control
from tests.tiny_models import make_linear_onnx

from edgeloop.control.deployments import DeploymentSpec, spec_changes
from edgeloop.core.errors import ConflictError
from edgeloop.core.types import Manifest, TensorSpec


def _manifest(features: int, classes: int = 3, dtype: str = "float32") -> dict[str, Any]:
    return Manifest(
        name="lin",
        format="onnx",
        inputs=(TensorSpec("input", (None, features), dtype),),
        outputs=(TensorSpec("output", (None, classes)),),
    ).to_dict()


def test_the_same_inputs_and_outputs_are_no_change() -> None:
    assert spec_changes(_manifest(4), _manifest(4)) == []


def test_a_changed_shape_dtype_or_name_is_named_old_and_new() -> None:
    assert spec_changes(_manifest(4), _manifest(8)) == [
        "input 'input': float32 [None, 4] -> float32 [None, 8]"
    ]
    assert spec_changes(_manifest(4), _manifest(4, dtype="int8")) == [
        "input 'input': float32 [None, 4] -> int8 [None, 4]"
    ]
    renamed = _manifest(4)
    renamed["outputs"] = [{"name": "probs", "shape": [None, 3], "dtype": "float32"}]
    assert spec_changes(_manifest(4), renamed) == [
        "output 'output': float32 [None, 3] -> absent",
        "output 'probs': absent -> float32 [None, 3]",
    ]


def test_force_spec_change_round_trips_and_is_off_by_default() -> None:
    doc = {"name": "d", "model": "lin:1"}
    assert DeploymentSpec.from_dict(doc).force_spec_change is False
    assert "force_spec_change" not in DeploymentSpec.from_dict(doc).to_dict()
    forced = DeploymentSpec.from_dict({**doc, "force_spec_change": True})
    assert DeploymentSpec.from_dict(forced.to_dict()).force_spec_change is True


def _publish(ctl: Control, model: Path, features: int) -> None:
    files = {"file": ("model.onnx", model.read_bytes())}
    data = {"manifest": json.dumps(_manifest(features))}
    ctl.ok("POST", "/api/v1/models", files=files, data=data)


def _spec(model: str, **extra: Any) -> dict[str, Any]:
    return {"name": "d", "model": model, "selector": {"labels": {"site": "a"}},
            "plan": {"waves": ["100%"], "soak_s": 0}, **extra}  # fmt: skip


def test_a_new_input_shape_is_refused_with_409_and_nothing_starts_unless_forced(
    tmp_path: Path,
) -> None:
    with control(tmp_path / "home") as ctl:
        _publish(ctl, make_linear_onnx(tmp_path / "a.onnx", features=4), 4)
        _publish(ctl, make_linear_onnx(tmp_path / "b.onnx", features=8), 8)
        nodes = [ctl.enroll(f"n{i}", {"site": "a"}) for i in range(2)]
        first = ctl.ok("POST", "/api/v1/deployments", json=_spec("lin:1"))
        for node in nodes:
            node.act()
        ctl.tick(2)
        assert ctl.ok("GET", f"/api/v1/rollouts/{first['rollout_id']}")["state"] == "COMPLETED"
        revisions = [n.desired()["revision"] for n in nodes]
        targets = ctl.plane.repo.metadata("targets.json")

        refused = ctl.request("POST", "/api/v1/deployments", json=_spec("lin:2"), headers=ctl.admin)
        assert refused.status_code == 409, refused.text
        text = refused.text
        assert "input 'input': float32 [None, 4] -> float32 [None, 8]" in text
        assert "n0 (lin:1 -> lin:2)" in text and "n1 (lin:1 -> lin:2)" in text
        assert "--force-spec-change" in text and "force_spec_change" in text
        # nothing started, nothing signed: the same rollouts, revisions and TUF targets
        assert len(ctl.ok("GET", "/api/v1/rollouts")["rollouts"]) == 1
        assert [n.desired()["revision"] for n in nodes] == revisions
        assert ctl.plane.repo.metadata("targets.json") == targets

        forced = ctl.request(
            "POST",
            "/api/v1/deployments",
            json=_spec("lin:2", force_spec_change=True),
            headers=ctl.admin,
        )
        assert forced.status_code == 201, forced.text
        assert forced.json()["spec"]["force_spec_change"] is True


def test_a_non_boolean_force_is_a_400(tmp_path: Path) -> None:
    with control(tmp_path / "home") as ctl:
        body = _spec("lin:1", force_spec_change="yes")
        answer = ctl.request("POST", "/api/v1/deployments", json=body, headers=ctl.admin)
        assert answer.status_code == 400, answer.text
        assert "force_spec_change" in answer.text


def test_the_check_is_repeated_in_the_transaction_that_creates_the_rollout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another admin's deployment that lands between the early check and the rollout's
    creation (here: while the artifact is being signed) still gets the 409."""
    with control(tmp_path / "home") as ctl:
        _publish(ctl, make_linear_onnx(tmp_path / "a.onnx", features=4), 4)
        _publish(ctl, make_linear_onnx(tmp_path / "b.onnx", features=8), 8)
        node = ctl.enroll("n0", {"site": "a"})
        plane = ctl.plane
        publish = plane.publish_artifact
        raced: list[str] = []

        def racing(*args: Any) -> dict[str, Any]:
            if not raced:  # once: lin:1 (4 features) is deployed and committed meanwhile
                raced.append("deploying")
                raced[0] = plane.deploy(DeploymentSpec.from_dict(_spec("lin:1")))["rollout_id"]
                node.act()
                ctl.tick(2)
            return publish(*args)

        monkeypatch.setattr(plane, "publish_artifact", racing)
        with pytest.raises(ConflictError, match=r"float32 \[None, 4\] -> float32 \[None, 8\]"):
            plane.deploy(DeploymentSpec.from_dict(_spec("lin:2")))
        assert ctl.ok("GET", f"/api/v1/rollouts/{raced[0]}")["state"] == "COMPLETED"
        assert [r["rollout_id"] for r in ctl.ok("GET", "/api/v1/rollouts")["rollouts"]] == raced
        assert node.desired()["revision"] == 1
