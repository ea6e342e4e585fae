"""Regression tests for what the schemathesis runs found (tests/fuzz, bench/fuzz_bench.py): each
request once answered 5xx; it must now answer 4xx naming what is wrong and leave nothing behind."""

from __future__ import annotations

from pathlib import Path

from tests.control.harness import control

OTHER_SHAPES = ["null", "[]", '"x"', "3", '{"name": "m", "format": "onnx", "inputs": [1]}']


def test_a_manifest_of_another_json_shape_is_a_400_not_a_500(tmp_path: Path) -> None:
    # was: AttributeError ('NoneType' object has no attribute 'get') in Manifest.from_dict: 500
    with control(tmp_path / "home") as ctl:
        for manifest in OTHER_SHAPES:
            files = {"file": ("model.onnx", b"\x08\x01")}
            data = {"manifest": manifest}
            response = ctl.request("POST", "/api/v1/models", files=files, data=data,
                                   headers=ctl.admin)  # fmt: skip
            assert response.status_code == 400, (manifest, response.text)
            assert "manifest" in response.json()["error"]
        assert ctl.ok("GET", "/api/v1/models")["models"] == []  # nothing stored
