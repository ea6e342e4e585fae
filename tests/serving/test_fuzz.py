"""No input can make the server answer 5xx or crash: random bodies, headers, paths, methods.

Hypothesis throws raw bytes, arbitrary JSON, and protocol-shaped documents with wrong fields,
shapes, datatypes, data and binary tails at every route. The app runs in-process with httpx's
``raise_app_exceptions``, so an unhandled exception fails the test instead of being a 500.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from tests.serving.harness import Harness, serving
from tests.serving.models import make_cnn_onnx, make_two_input_onnx

from edgeloop.serving import ServerConfig

PATHS = [
    "/v2", "/v2/health/live", "/v2/health/ready", "/v2/models/cnn", "/v2/models/cnn/ready",
    "/v2/models/cnn/infer", "/v2/models/cnn/versions/1/infer", "/v2/models/cnn/versions/x/infer",
    "/v2/models/two/infer", "/v2/models/ghost/infer", "/v2/models/cnn/versions/1",
    "/v2/repository/index", "/v2/repository/models/cnn/load", "/v2/repository/models/x/unload",
    "/predict", "/predict/cnn", "/predict/two", "/predict/ghost", "/health", "/metrics",
]  # fmt: skip
ascii_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | ascii_text,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(ascii_text, children, max_size=4)
    ),
    max_leaves=20,
)
tensor = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["input", "a", "b", "n", "x", ""]) | json_values,
        "shape": st.sampled_from([[1, 3, 32, 32], [1, 2], [2, 2], [1, 1], [0, 2], [1, 3, 32]])
        | st.lists(st.integers(-2, 40), max_size=5)
        # axes numpy cannot reshape to, even with no value (issue 17 item 2: was a 500)
        | st.lists(st.sampled_from([0, 1, 2**31, 2**32, 2**63 - 1, 2**64]), max_size=4)
        | json_values,
        "datatype": st.sampled_from(["FP32", "INT64", "BOOL", "FP16", "BYTES", "UINT8", "x"]),
    },
    optional={
        "data": st.lists(
            st.floats(allow_nan=False) | st.integers(-300, 300) | st.integers(), max_size=40
        )
        | st.integers(1, 4).map(lambda n: [[0.5] * 2] * n)
        | st.just([0.0] * 3072)
        | json_values,
        "parameters": st.fixed_dictionaries(
            {}, optional={"binary_data_size": st.integers(-4, 200) | json_values}
        ),
    },
)
oip_doc = st.fixed_dictionaries(
    {"inputs": st.lists(tensor, max_size=4) | json_values},
    optional={
        "id": json_values,
        "outputs": st.lists(
            st.fixed_dictionaries(
                {"name": st.sampled_from(["output", "sum", "count", "zz"]) | json_values},
                optional={"parameters": st.dictionaries(ascii_text, json_values, max_size=3)},
            ),
            max_size=3,
        )
        | json_values,
        "parameters": st.dictionaries(ascii_text, json_values, max_size=3),
    },
)
predict_doc = st.fixed_dictionaries(
    {"features": st.lists(st.floats(allow_nan=False), max_size=50) | json_values},
    optional={"request_id": json_values, "model": json_values},
)


def _valid_two() -> dict[str, Any]:
    return {
        "inputs": [
            {"name": "a", "shape": [1, 2], "datatype": "FP32", "data": [1.0, 2.0]},
            {"name": "b", "shape": [1, 2], "datatype": "FP32", "data": [3.0, 4.0]},
            {"name": "n", "shape": [1, 1], "datatype": "INT64", "data": [5]},
        ]
    }


@st.composite
def near_valid(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    """A valid request for model ``two`` with one or two fields changed: reaches validation."""
    doc = _valid_two()
    for _ in range(draw(st.integers(1, 2))):
        if not doc["inputs"]:
            break
        target = draw(st.sampled_from(doc["inputs"]))
        field = draw(st.sampled_from(["name", "shape", "datatype", "data", "drop", "dup", "out"]))
        if field == "drop":
            doc["inputs"].remove(target)
        elif field == "dup":
            doc["inputs"].append(dict(target))
        elif field == "out":
            doc["outputs"] = [{"name": draw(st.sampled_from(["sum", "count", "zz"]))}]
        else:
            target[field] = (
                draw(tensor)[field]
                if field != "data"
                else draw(
                    st.lists(st.floats() | st.integers(-(2**70), 2**70) | st.booleans(), max_size=6)
                )
            )
    if not draw(st.booleans()):
        return _dumps(doc), {}
    # The same document with the first input sent as binary bytes of the drawn size.
    first = doc["inputs"][0] if doc["inputs"] else {}
    first.pop("data", None)
    tail = draw(st.binary(max_size=64))
    first["parameters"] = {"binary_data_size": draw(st.just(len(tail)) | st.integers(0, 64))}
    header = _dumps(doc)
    return header + tail, {"Inference-Header-Content-Length": str(len(header))}


def _dumps(value: Any) -> bytes:
    """The stdlib writes what orjson refuses (integers past 64 bits, Infinity): good fuzz."""
    return json.dumps(value).encode()


@st.composite
def bodies(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    kind = draw(st.sampled_from(["raw", "json", "oip", "oip+binary", "predict"]))
    headers: dict[str, str] = {}
    if kind == "raw":
        body = draw(st.binary(max_size=300))
    elif kind == "json":
        body = _dumps(draw(json_values))
    elif kind == "predict":
        body = _dumps(draw(predict_doc))
    else:
        body = _dumps(draw(oip_doc))
        if kind == "oip+binary":
            headers["Inference-Header-Content-Length"] = str(
                draw(st.integers(-5, len(body) + 5) | st.just(len(body)))
            )
            body += draw(st.binary(max_size=300))
    if draw(st.booleans()):
        headers["Inference-Header-Content-Length"] = draw(ascii_text)
    if draw(st.integers(0, 9)) == 0:
        headers["Content-Encoding"] = draw(st.sampled_from(["gzip", "deflate", "br", "", "x"]))
    if draw(st.booleans()):
        headers["X-Request-Key"] = draw(ascii_text)
    return body, headers


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    root = tmp_path_factory.mktemp("fuzz")
    models = [make_cnn_onnx(root / "cnn.onnx"), make_two_input_onnx(root / "two.onnx")]
    with serving(models, ServerConfig(max_body_bytes=4096, max_queue=8)) as harness:
        yield harness


INFER_PATHS = [p for p in PATHS if p.endswith("infer") or p.startswith("/predict")]


@settings(
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(path=st.sampled_from(INFER_PATHS), payload=bodies())
def test_no_inference_request_gets_a_5xx(
    server: Harness, path: str, payload: tuple[bytes, dict[str, str]]
) -> None:
    _check(server, "POST", path, payload)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=near_valid())
def test_no_near_valid_request_gets_a_5xx(
    server: Harness, payload: tuple[bytes, dict[str, str]]
) -> None:
    _check(server, "POST", "/v2/models/two/infer", payload)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    method=st.sampled_from(["GET", "POST", "POST", "POST", "PUT", "DELETE"]),
    path=st.sampled_from(PATHS) | ascii_text.map(lambda t: "/v2/models/" + t.replace("?", "")),
    payload=bodies(),
)
def test_no_request_on_any_route_gets_a_5xx(
    server: Harness, method: str, path: str, payload: tuple[bytes, dict[str, str]]
) -> None:
    _check(server, method, path, payload)


def _check(server: Harness, method: str, path: str, payload: tuple[bytes, dict[str, str]]) -> None:
    body, headers = payload
    response: Any = server.call(
        lambda: server.client.request(method, path, content=body, headers=headers)
    )
    event(f"status {response.status_code}")  # --hypothesis-show-statistics shows the spread
    assert response.status_code < 500, (response.status_code, response.text[:300])
    if response.status_code >= 400:
        assert isinstance(orjson.loads(response.content).get("error"), str)


def test_the_server_still_answers_after_the_fuzzing(server: Harness) -> None:
    server.post("/v2/repository/models/cnn/load")
    assert server.get("/v2/health/live").status_code == 200
    assert server.get("/v2/models/cnn/ready").status_code == 200
