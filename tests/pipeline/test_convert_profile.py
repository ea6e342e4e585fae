"""A converted output that takes its parent's very input is registered with the parent's drift
reference, so a node serving it monitors drift as it would the parent."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.formats.convert_models import tiny_source

from edgeloop.core.settings import Settings
from edgeloop.core.types import Manifest, ModelRef
from edgeloop.formats.onnx_info import inspect_onnx
from edgeloop.monitoring.profile import build_profile
from edgeloop.pipeline.convert import run_conversion
from edgeloop.pipeline.convert_publish import register_results
from edgeloop.registry import Registry

pytest.importorskip("openvino")


def test_an_output_with_the_parents_input_carries_the_parents_profile(tmp_path: Path) -> None:
    source = tiny_source(tmp_path / "src")
    settings = Settings.load(tmp_path / "home").ensure()
    info = inspect_onnx(source.onnx)
    profile = build_profile(source.calibration).to_bytes()
    with Registry.open(settings) as registry:
        manifest = Manifest(name="tiny", format="onnx", inputs=info.inputs, outputs=info.outputs)
        parent = registry.publish(source.onnx, manifest, profile=profile)
    assert parent.manifest.profile is not None

    report = run_conversion(source, ["openvino"], tmp_path / "out", runs=3)
    _, refs = register_results(report, "tiny", parent.ref, settings)

    with Registry.open(settings) as registry:
        child = registry.show(ModelRef.parse(refs["openvino"]))
        carried = child.manifest.profile
        assert carried is not None and carried.sha256 == parent.manifest.profile.sha256
        _, path = registry.profile(child.ref)
        assert path is not None and path.read_bytes() == profile
