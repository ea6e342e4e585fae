"""The HTTP edge in-process: every endpoint, JSON and binary tensors, each 4xx, the metrics."""

from __future__ import annotations

import gzip
import re
import sys
import zlib
from pathlib import Path

import numpy as np
import onnxruntime as ort
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.serving.harness import binary_request, image, infer_url, json_request, serving
from tests.serving.models import make_two_input_onnx

from edgeloop.serving import ServerConfig


def _reference(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"input": x})[0])


def _samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every sample of metric ``name`` keyed by its sorted labels."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def test_server_metadata_health_and_readiness(cnn: Path) -> None:
    with serving([cnn]) as s:
        meta = s.get("/v2").json()
        assert meta["name"] == "edgeloop" and "binary_tensor_data" in meta["extensions"]
        assert s.get("/v2/health/live").status_code == 200
        assert s.get("/v2/health/ready").json() == {"ready": True}
        health = s.get("/health").json()
        assert health["status"] == "ok" and health["model_loaded"] is True
        assert health["models"] == [{"name": "cnn", "version": "1", "loaded": True}]
        assert health["process"]["torch_imported"] == ("torch" in sys.modules)


def test_model_metadata_and_readiness_with_and_without_version(cnn: Path) -> None:
    with serving([cnn]) as s:
        meta = s.get("/v2/models/cnn").json()
        assert meta["name"] == "cnn" and meta["versions"] == ["1"]
        assert meta["platform"] == "onnxruntime_onnx"
        assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 3, 32, 32]}]
        assert meta["outputs"] == [{"name": "output", "datatype": "FP32", "shape": [-1, 10]}]
        assert s.get("/v2/models/cnn/versions/1").json()["versions"] == ["1"]
        assert s.get("/v2/models/cnn/ready").json() == {"name": "cnn", "ready": True}
        assert s.get("/v2/models/cnn/versions/1/ready").status_code == 200
        assert s.get("/v2/models/cnn/versions/9/ready").status_code == 400
        missing = s.get("/v2/models/nope/ready")
        assert missing.status_code == 404 and "'nope' is not served" in missing.json()["error"]


def test_json_infer_matches_onnxruntime(cnn: Path) -> None:
    x = image(seed=1, batch=2)
    with serving([cnn]) as s:
        r = s.post(infer_url("cnn"), json={**json_request(x), "id": "q1"})
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        doc = r.json()
    assert doc["model_name"] == "cnn" and doc["model_version"] == "1" and doc["id"] == "q1"
    (out,) = doc["outputs"]
    assert out["name"] == "output" and out["datatype"] == "FP32" and out["shape"] == [2, 10]
    np.testing.assert_allclose(np.array(out["data"]).reshape(2, 10), _reference(cnn, x), atol=1e-6)


def test_binary_in_binary_out_matches_onnxruntime(cnn: Path) -> None:
    x = image(seed=2, batch=3)
    body, headers = binary_request(x)
    with serving([cnn]) as s:
        r = s.post(infer_url("cnn", "1"), content=body, headers=headers)
    assert r.status_code == 200
    length = int(r.headers["inference-header-content-length"])
    doc = orjson.loads(r.content[:length])
    assert doc["outputs"][0]["parameters"] == {"binary_data_size": 3 * 10 * 4}
    got = np.frombuffer(r.content[length:], "<f4").reshape(3, 10)
    np.testing.assert_allclose(got, _reference(cnn, x), atol=1e-6)


def test_binary_in_json_out(cnn: Path) -> None:
    x = image(seed=3)
    body, headers = binary_request(x, binary_output=False)
    with serving([cnn]) as s:
        r = s.post(infer_url("cnn"), content=body, headers=headers)
    assert r.status_code == 200 and "inference-header-content-length" not in r.headers
    data = np.array(r.json()["outputs"][0]["data"]).reshape(1, 10)
    np.testing.assert_allclose(data, _reference(cnn, x), atol=1e-6)


def test_several_inputs_and_int64_and_a_chosen_output(tmp_path: Path) -> None:
    model = make_two_input_onnx(tmp_path / "two.onnx")
    doc = {
        "inputs": [
            {"name": "a", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]},
            {"name": "b", "shape": [1, 2], "datatype": "FP32", "data": [10, 20]},
            {"name": "n", "shape": [1, 1], "datatype": "INT64", "data": [21]},
        ],
        "outputs": [{"name": "count"}],
    }
    with serving([model]) as s:
        r = s.post(infer_url("two"), json=doc)
    assert r.status_code == 200
    assert r.json()["outputs"] == [
        {"name": "count", "datatype": "INT64", "shape": [1, 1], "data": [42]}
    ]


def test_gzip_and_deflate_bodies_are_inflated(cnn: Path) -> None:
    payload = orjson.dumps(json_request(image(seed=4)))
    with serving([cnn]) as s:
        for encoding, packed in (
            ("gzip", gzip.compress(payload)),
            ("deflate", zlib.compress(payload)),
        ):
            r = s.post(infer_url("cnn"), content=packed, headers={"Content-Encoding": encoding})
            assert r.status_code == 200, r.text


def test_predict_answers_prediction_confidence_request_id_and_version(cnn: Path) -> None:
    x = image(seed=5)
    expected = _reference(cnn, x)[0]
    with serving([cnn]) as s:
        r = s.post("/predict", json={"features": x.ravel().tolist(), "request_id": "abc"})
        named = s.post("/predict/cnn", json={"features": x.tolist()[0]})
    assert r.status_code == 200 and named.status_code == 200
    doc = r.json()
    assert doc["prediction"] == int(expected.argmax())
    assert doc["confidence"] == pytest.approx(float(expected.max()), rel=1e-5)
    assert doc["request_id"] == "abc" and doc["model_version"] == "1" and doc["model"] == "cnn"
    assert named.json()["prediction"] == doc["prediction"]


def test_predict_with_several_models_needs_a_name(cnn: Path, linear: Path) -> None:
    with serving([cnn, linear]) as s:
        r = s.post("/predict", json={"features": [0.1, 0.2, 0.3, 0.4]})
        assert r.status_code == 400 and "serves 2 models ('cnn', 'linear')" in r.json()["error"]
        ok = s.post("/predict", json={"features": [0.1, 0.2, 0.3, 0.4], "model": "linear"})
        assert ok.status_code == 200 and ok.json()["model"] == "linear"


FOUR_XX = [
    ("unknown model", "/v2/models/nope/infer", {"json": json_request(image())}, 404,
     "model 'nope' is not served; served models: 'cnn'"),
    ("unknown version", infer_url("cnn", "7"), {"json": json_request(image())}, 404,
     "model 'cnn' has no version '7'; served versions: 1"),
    ("malformed json", infer_url("cnn"), {"content": b'{"inputs": ['}, 400, "not valid JSON"),
    ("bad binary header", infer_url("cnn"),
     {"content": b"{}", "headers": {"Inference-Header-Content-Length": "x"}}, 400,
     "Inference-Header-Content-Length is 'x'"),
    ("wrong shape", infer_url("cnn"),
     {"json": json_request(np.zeros((1, 3, 16, 16), np.float32))}, 422,
     "input 'input' has shape \\[1, 3, 16, 16\\]; model 'cnn' version 1 expects "
     "\\[-1, 3, 32, 32\\] \\(axis 2 is 16, expected 32\\)"),
    ("wrong dtype", infer_url("cnn"),
     {"json": json_request(np.zeros((1, 3, 32, 32), np.int64), datatype="INT64")}, 422,
     "input 'input' has datatype INT64; model 'cnn' version 1 expects FP32"),
    ("wrong name", infer_url("cnn"),
     {"json": json_request(image(), name="pixels")}, 422,
     "input 'pixels' is not an input of model 'cnn' version 1; it expects 'input'"),
    ("unknown output", infer_url("cnn"),
     {"json": {**json_request(image()), "outputs": [{"name": "logits"}]}}, 422,
     "output 'logits' is not an output of model 'cnn' version 1; its outputs are 'output'"),
    ("bad encoding", infer_url("cnn"),
     {"content": b"{}", "headers": {"Content-Encoding": "br"}}, 400,
     "Content-Encoding 'br' is not supported"),
    ("corrupt gzip", infer_url("cnn"),
     {"content": b"\x1f\x8bnot gzip", "headers": {"Content-Encoding": "gzip"}}, 400,
     "gzip body is corrupt"),
    ("no route", "/v2/nothing", {"json": {}}, 404, "POST /v2/nothing: Not Found"),
    ("predict bad features", "/predict", {"json": {"features": "x"}}, 400,
     "needs a 'features' list"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "url", "kwargs", "status", "message"), FOUR_XX, ids=[c[0] for c in FOUR_XX]
)
def test_each_bad_request_is_a_4xx_naming_what_is_wrong(
    cnn: Path, case: str, url: str, kwargs: dict, status: int, message: str
) -> None:
    with serving([cnn]) as s:
        r = s.post(url, **kwargs)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert re.search(message, r.json()["error"]), r.json()["error"]


def test_nan_in_a_binary_input_is_refused_unless_allowed(cnn: Path) -> None:
    x = image(seed=6)
    x[0, 1, 2, 3] = np.nan
    body, headers = binary_request(x)
    with serving([cnn]) as s:
        r = s.post(infer_url("cnn"), content=body, headers=headers)
    assert r.status_code == 422
    assert "input 'input' of model 'cnn' version 1 holds 1 NaN/Inf" in r.json()["error"]
    with serving([cnn], ServerConfig(allow_nonfinite=True)) as s:
        assert s.post(infer_url("cnn"), content=body, headers=headers).status_code == 200


def test_a_body_over_the_limit_is_413(cnn: Path) -> None:
    body, headers = binary_request(image(batch=2))  # ~24.6 kB
    with serving([cnn], ServerConfig(max_body_bytes=10_000)) as s:
        r = s.post(infer_url("cnn"), content=body, headers=headers)
        bomb = gzip.compress(b" " * 200_000)  # 200 kB of JSON whitespace in ~300 bytes
        inflated = s.post(infer_url("cnn"), content=bomb, headers={"Content-Encoding": "gzip"})
    assert r.status_code == 413 and "limit of 10000 bytes" in r.json()["error"]
    assert inflated.status_code == 413 and "once gzip-decompressed" in inflated.json()["error"]


def test_metrics_parse_and_count_requests_errors_latency_and_batches(cnn: Path) -> None:
    body, headers = binary_request(image())
    with serving([cnn]) as s:
        for _ in range(3):
            assert s.post(infer_url("cnn"), content=body, headers=headers).status_code == 200
        s.post(infer_url("cnn"), json=json_request(np.zeros((1, 3, 8, 8), np.float32)))
        s.post("/v2/models/ghost/infer", json={})
        text = s.metrics()
    ok = (("code", "200"), ("endpoint", "infer"), ("model", "cnn"), ("role", "primary"),
          ("variant", "default"), ("version", "1"))  # fmt: skip
    assert _samples(text, "edgeloop_requests_total")[ok] == 3.0
    errors = _samples(text, "edgeloop_errors_total")
    assert errors[(("error", "DataError"), ("model", "cnn"), ("version", "1"))] == 1.0
    assert errors[(("error", "NotFoundError"), ("model", "_unknown"), ("version", ""))] == 1.0
    arm = (("model", "cnn"), ("role", "primary"), ("variant", "default"), ("version", "1"))
    for name in ("edgeloop_queue_seconds_count", "edgeloop_inference_seconds_count",
                 "edgeloop_request_seconds_count"):  # fmt: skip
        assert _samples(text, name)[arm] == 3.0
    batch = (("model", "cnn"), ("variant", "default"), ("version", "1"))
    assert _samples(text, "edgeloop_batch_size_count")[batch] >= 3.0  # + the self-test run
    assert _samples(text, "edgeloop_pool_loads_total")[batch] == 1.0
    assert _samples(text, "edgeloop_model_ready")[(("model", "cnn"), ("version", "1"))] == 1.0
    assert _samples(text, "process_resident_memory_bytes")[()] > 0


def test_metadata_of_unknown_model_and_wrong_method(cnn: Path) -> None:
    with serving([cnn]) as s:
        r = s.get("/v2/models/ghost")
        assert r.status_code == 404 and "'ghost' is not served" in r.json()["error"]
        wrong = s.get(infer_url("cnn"))
        assert wrong.status_code == 405 and "Method Not Allowed" in wrong.json()["error"]


def test_repository_index_lists_versions_and_states(repo: Path) -> None:
    with serving([repo]) as s:
        index = s.post("/v2/repository/index").json()
    assert sorted((m["name"], m["version"], m["state"]) for m in index) == [
        ("clf", "1", "ready"),
        ("clf", "2", "ready"),
    ]
