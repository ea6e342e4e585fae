"""The engine is part of a variant: the server runs .onnx files on the engine it is told to."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from tests.serving.harness import serving
from tests.tiny_models import make_linear_onnx

from edgeloop.agent.activator import serving_config
from edgeloop.core.errors import ConfigError
from edgeloop.serving import ServerConfig

needs_openvino = pytest.mark.skipif(
    importlib.util.find_spec("openvino") is None, reason="openvino is not installed"
)


@needs_openvino
def test_an_onnx_file_runs_on_openvino_when_asked_and_answers_the_same(tmp_path: Path) -> None:
    model = make_linear_onnx(tmp_path / "lin.onnx")
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    answers = {}
    for engine in ("onnxruntime", "openvino"):
        with serving([model], ServerConfig(engine=engine)) as h:
            meta = h.get("/v2/models/lin").json()
            assert (
                meta["parameters"]["provider"]
                .split(":")[0]
                .lower()
                .startswith("openvino" if engine == "openvino" else "cpu")
            ), meta["parameters"]["provider"]
            r = h.infer("lin", x)
            assert r.status_code == 200, r.text
            answers[engine] = np.asarray(r.json()["outputs"][0]["data"], np.float32)
    np.testing.assert_allclose(answers["openvino"], answers["onnxruntime"], atol=1e-5)


def test_an_unknown_engine_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="engine='tensorrt'.*onnxruntime, openvino"):
        ServerConfig(engine="tensorrt")


def test_the_agent_applies_the_engine_tune_recorded_unless_the_deployment_says_otherwise() -> None:
    doc = {"models": [{"manifest": {"recipe": {"engine": "openvino"}}}], "serving": {}}
    config, ignored = serving_config(ServerConfig(), json.dumps(doc).encode())
    assert config.engine == "openvino" and ignored == []
    doc["serving"] = {"engine": "onnxruntime", "max_batch": 4}
    config, _ = serving_config(ServerConfig(), json.dumps(doc).encode())
    assert (config.engine, config.max_batch) == ("onnxruntime", 4)
    plain = {"models": [{"manifest": {"recipe": {}}}]}
    assert serving_config(ServerConfig(), json.dumps(plain).encode())[0].engine is None
