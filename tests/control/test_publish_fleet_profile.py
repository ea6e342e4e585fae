"""`edgeloop fleet publish NAME:VERSION` carries the local version's reference profile to a
real control plane process: the fleet's manifest lists the same profile and its bytes are there."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tests.control.process import control_process
from tests.tiny_models import make_linear_onnx
from typer.testing import CliRunner

from edgeloop.cli.app import app
from edgeloop.core.settings import Settings
from edgeloop.core.types import Manifest, ModelRef, TensorSpec
from edgeloop.monitoring import ReferenceProfile, build_profile
from edgeloop.registry import Registry

ADMIN = "test-admin-token-0123456789abcdef"


def test_fleet_publish_carries_the_profile(home: Path, tmp_path: Path) -> None:
    inputs, outputs = (TensorSpec("input", (None, 4)),), (TensorSpec("output", (None, 3)),)
    manifest = Manifest("prof", "onnx", inputs, outputs)
    profile = build_profile(np.random.default_rng(0).standard_normal((60, 4))).to_bytes()
    with Registry.open(Settings.load(home)) as registry:
        local = registry.publish(make_linear_onnx(tmp_path / "a.onnx"), manifest, profile=profile)
    with control_process(tmp_path / "ctl", admin_token=ADMIN) as ctl:
        control = ["--control", ctl.url, "--token", ADMIN, "--format", "json"]
        result = CliRunner().invoke(app, ["fleet", "publish", "prof:1", *control])
        assert result.exit_code == 0, (result.output, result.exception)
        [step] = json.loads(result.stdout)["steps"]
        assert step["status"] == "published"
        with Registry.open(Settings.load(Path(ctl.ready["home"]))) as theirs:
            version, path = theirs.profile(ModelRef("prof", 1))
            assert path is not None
            assert version.manifest.profile == local.manifest.profile
            assert ReferenceProfile.from_bytes(path.read_bytes()).sample_shape == (4,)
