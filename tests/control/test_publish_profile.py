"""POST /api/v1/models: the optional reference profile (stored, then signed as a second TUF
target of the version and named by the deployment document), the requested ``version``
(honoured; 409 when another model holds it; 200 with the record when the same bytes do) and
the ``sha256`` field checked against the bytes (422)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from tests.control.harness import Control, control
from tests.tiny_models import make_linear_onnx

from edgeloop.core.types import Manifest, TensorSpec
from edgeloop.monitoring import build_profile

INPUTS, OUTPUTS = (TensorSpec("input", (None, 4)),), (TensorSpec("output", (None, 3)),)
MANIFEST = Manifest("lin", "onnx", INPUTS, OUTPUTS)


def _profile(features: int = 4) -> bytes:
    return build_profile(np.random.default_rng(0).standard_normal((80, features))).to_bytes()


def _post(ctl: Control, model: Path, profile: bytes | None = None, **fields: str) -> httpx.Response:
    files: dict[str, Any] = {"file": ("model.onnx", model.read_bytes())}
    if profile is not None:
        files["profile"] = ("model.profile.npz", profile)
    data = {"manifest": json.dumps(MANIFEST.to_dict()), **fields}
    return ctl.request("POST", "/api/v1/models", files=files, data=data, headers=ctl.admin)


def _versions(ctl: Control) -> list[tuple[str, int]]:
    return [(m["name"], m["version"]) for m in ctl.ok("GET", "/api/v1/models")["models"]]


def test_the_profile_is_stored_signed_and_named_by_the_document(tmp_path: Path) -> None:
    profile = _profile()
    sha = hashlib.sha256(profile).hexdigest()
    with control(tmp_path / "ctl") as ctl:
        answer = _post(ctl, make_linear_onnx(tmp_path / "a.onnx"), profile)
        assert answer.status_code == 201, answer.text
        assert answer.json()["manifest"]["profile"]["sha256"] == sha
        node = ctl.enroll("n0", {"site": "a"})
        spec = {"name": "d", "model": "lin:1", "selector": {"labels": {"site": "a"}},
                "plan": {"waves": ["100%"], "soak_s": 0}}  # fmt: skip
        ctl.ok("POST", "/api/v1/deployments", json=spec)
        [entry] = node.document()["models"]
        target = "artifacts/lin-1.profile.npz"
        assert entry["profile"] == {"target": target, "sha256": sha, "length": len(profile)}
        signed = ctl.plane.repo.targets()[target]
        assert signed.hashes["sha256"] == sha and signed.length == len(profile)
        url = f"/tuf/targets/artifacts/{sha}.lin-1.profile.npz"
        got = ctl.request("GET", url, headers=node.auth)
        assert got.status_code == 200 and got.content == profile


def test_a_version_without_a_profile_is_deployed_without_one(tmp_path: Path) -> None:
    with control(tmp_path / "ctl") as ctl:
        assert _post(ctl, make_linear_onnx(tmp_path / "a.onnx")).status_code == 201
        node = ctl.enroll("n0", {"site": "a"})
        spec = {"name": "d", "model": "lin:1", "selector": {"labels": {"site": "a"}},
                "plan": {"waves": ["100%"], "soak_s": 0}}  # fmt: skip
        ctl.ok("POST", "/api/v1/deployments", json=spec)
        [entry] = node.document()["models"]
        assert "profile" not in entry
        assert not any(t.endswith(".profile.npz") for t in ctl.plane.repo.targets())


def test_a_profile_of_another_shape_is_refused(tmp_path: Path) -> None:
    with control(tmp_path / "ctl") as ctl:
        answer = _post(ctl, make_linear_onnx(tmp_path / "a.onnx"), _profile(features=3))
        assert answer.status_code == 400, answer.text
        assert "shape 3" in answer.json()["error"]
        assert _versions(ctl) == []


def test_the_requested_version_is_honoured_taken_or_already_there(tmp_path: Path) -> None:
    a = make_linear_onnx(tmp_path / "a.onnx", seed=1)
    b = make_linear_onnx(tmp_path / "b.onnx", seed=2)
    with control(tmp_path / "ctl") as ctl:
        first = _post(ctl, a, version="3")
        assert first.status_code == 201 and first.json()["version"] == 3
        again = _post(ctl, a, version="3")
        assert again.status_code == 200 and again.json() == first.json()
        taken = _post(ctl, b, version="3")
        assert taken.status_code == 409, taken.text
        assert "lin:3 is taken by another model" in taken.json()["error"]
        assert _versions(ctl) == [("lin", 3)]
        bad = _post(ctl, b, version="three")
        assert bad.status_code == 400 and "version" in bad.json()["error"]


def test_a_sha256_that_is_not_the_bytes_is_422(tmp_path: Path) -> None:
    model = make_linear_onnx(tmp_path / "a.onnx")
    with control(tmp_path / "ctl") as ctl:
        wrong = _post(ctl, model, sha256="0" * 64)
        assert wrong.status_code == 422, wrong.text
        assert _versions(ctl) == []
        right = hashlib.sha256(model.read_bytes()).hexdigest()
        assert _post(ctl, model, sha256=right).status_code == 201


def test_an_unknown_form_field_is_refused(tmp_path: Path) -> None:
    with control(tmp_path / "ctl") as ctl:
        answer = _post(ctl, make_linear_onnx(tmp_path / "a.onnx"), colour="red")
        assert answer.status_code == 400, answer.text
        assert _versions(ctl) == []
