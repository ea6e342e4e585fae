"""The Open Inference Protocol codec: JSON and binary tensors both ways; every malformed body."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeloop.core.errors import ConversionError
from edgeloop.core.types import TensorSpec
from edgeloop.serving.errors import BadRequestError
from edgeloop.serving.oip import (
    DATATYPES,
    InferRequest,
    RequestedOutput,
    decode_infer,
    encode_infer,
    tensor_metadata,
)


def _body(doc: Any) -> bytes:
    return orjson.dumps(doc)


def _one(data: Any, shape: list[int], datatype: str = "FP32", **extra: Any) -> bytes:
    return _body({"inputs": [{"name": "x", "shape": shape, "datatype": datatype, "data": data}]})


def test_json_input_flat_and_nested_decode_to_the_same_array() -> None:
    flat = decode_infer(_one([1, 2, 3, 4, 5, 6], [2, 3]), None)
    nested = decode_infer(_one([[1, 2, 3], [4, 5, 6]], [2, 3]), None)
    for request in (flat, nested):
        (tensor,) = request.inputs
        assert tensor.name == "x" and tensor.datatype == "FP32" and tensor.shape == (2, 3)
        assert tensor.array.dtype == np.float32
        np.testing.assert_array_equal(tensor.array, [[1, 2, 3], [4, 5, 6]])
    assert flat.outputs is None and flat.id is None and not flat.binary_output


@pytest.mark.parametrize(
    ("datatype", "data", "dtype"),
    [
        ("INT64", [1, -2], np.int64),
        ("INT8", [127, -128], np.int8),
        ("UINT8", [0, 255], np.uint8),
        ("BOOL", [True, False], np.bool_),
        ("FP64", [0.5, 1], np.float64),
        ("FP16", [0.5, 2], np.float16),
    ],
)
def test_json_datatypes_decode_to_their_numpy_dtype(datatype: str, data: list, dtype: Any) -> None:
    (tensor,) = decode_infer(_one(data, [2], datatype), None).inputs
    assert tensor.array.dtype == dtype
    np.testing.assert_array_equal(tensor.array, np.asarray(data, dtype=dtype))


def test_binary_inputs_follow_the_json_header_in_input_order() -> None:
    a = np.arange(6, dtype="<f4").reshape(2, 3)
    b = np.array([[7], [9]], dtype="<i8")
    doc = {
        "id": "req-1",
        "inputs": [
            {"name": "a", "shape": [2, 3], "datatype": "FP32",
             "parameters": {"binary_data_size": a.nbytes}},
            {"name": "n", "shape": [2, 1], "datatype": "INT64", "data": [1, 2]},
            {"name": "b", "shape": [2, 1], "datatype": "INT64",
             "parameters": {"binary_data_size": b.nbytes}},
        ],
        "outputs": [{"name": "y", "parameters": {"binary_data": True}}, {"name": "z"}],
    }  # fmt: skip
    header = _body(doc)
    request = decode_infer(header + a.tobytes() + b.tobytes(), str(len(header)))
    assert request.id == "req-1"
    np.testing.assert_array_equal(request.inputs[0].array, a)
    np.testing.assert_array_equal(request.inputs[1].array, [[1], [2]])
    np.testing.assert_array_equal(request.inputs[2].array, b)
    assert request.outputs == (RequestedOutput("y", True), RequestedOutput("z", False))


def _request(**kw: Any) -> InferRequest:
    return InferRequest(kw.get("id"), (), kw.get("outputs"), kw.get("binary_output", False))


def test_json_response_carries_flat_data_shape_datatype_and_id() -> None:
    out = {"probs": np.array([[0.25, 0.75]], dtype=np.float32), "n": np.array([[3]], np.int64)}
    body, headers = encode_infer(
        model_name="m", model_version="2", request=_request(id="abc"), outputs=out
    )
    assert headers == {"content-type": "application/json"}
    doc = orjson.loads(body)
    assert doc == {
        "model_name": "m",
        "model_version": "2",
        "id": "abc",
        "outputs": [
            {"name": "probs", "datatype": "FP32", "shape": [1, 2], "data": [0.25, 0.75]},
            {"name": "n", "datatype": "INT64", "shape": [1, 1], "data": [3]},
        ],
    }


def test_binary_response_puts_the_raw_bytes_after_the_header() -> None:
    probs = np.array([[0.25, 0.75]], dtype=np.float32)
    n = np.array([[3]], np.int64)
    asked = (RequestedOutput("probs", True), RequestedOutput("n", False))
    body, headers = encode_infer(
        model_name="m",
        model_version="1",
        request=_request(outputs=asked),
        outputs={"probs": probs, "n": n},
    )
    length = int(headers["inference-header-content-length"])
    assert headers["content-type"] == "application/octet-stream"
    doc = orjson.loads(body[:length])
    assert doc["outputs"][0]["parameters"] == {"binary_data_size": 8}
    assert "data" not in doc["outputs"][0]
    assert doc["outputs"][1]["data"] == [3]
    np.testing.assert_array_equal(np.frombuffer(body[length:], "<f4"), probs.ravel())


def test_binary_data_output_parameter_makes_every_output_binary() -> None:
    body = _body({"parameters": {"binary_data_output": True}, "inputs": [
        {"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}]})  # fmt: skip
    request = decode_infer(body, None)
    out = {"a": np.ones((1,), np.float32), "b": np.zeros((1,), np.float32)}
    encoded, headers = encode_infer(model_name="m", model_version="1", request=request, outputs=out)
    length = int(headers["inference-header-content-length"])
    assert len(encoded) == length + 8


def test_an_output_without_a_protocol_datatype_is_a_conversion_error() -> None:
    with pytest.raises(ConversionError, match="'label'"):
        encode_infer(
            model_name="m",
            model_version="1",
            request=_request(),
            outputs={"label": np.array(["cat"], dtype=object)},
        )


def test_tensor_metadata_marks_free_axes_minus_one() -> None:
    spec = TensorSpec("input", (None, 3, 32, 32), "float32")
    assert tensor_metadata([spec]) == [
        {"name": "input", "datatype": "FP32", "shape": [-1, 3, 32, 32]}
    ]


def test_every_datatype_is_little_endian_or_a_single_byte() -> None:
    for name, dtype in DATATYPES.items():
        assert dtype.byteorder in ("<", "|", "="), name


MALFORMED: list[tuple[str, bytes, str | None, str]] = [
    ("not json", b"{nope", None, "not valid JSON"),
    ("json list", b"[1, 2]", None, "must be a JSON object"),
    ("no inputs", b"{}", None, "'inputs' must be a non-empty list"),
    ("empty inputs", _body({"inputs": []}), None, "non-empty list"),
    ("input not object", _body({"inputs": [3]}), None, "inputs\\[0\\] must be a JSON object"),
    ("no name", _body({"inputs": [{"shape": [1], "datatype": "FP32", "data": [1]}]}), None,
     "'name' must be a non-empty string"),
    ("bad datatype", _one([1], [1], "FLOAT"), None, "datatype 'FLOAT'; expected one of"),
    ("bytes", _one(["a"], [1], "BYTES"), None, "BYTES tensors are not served"),
    ("bad shape", _one([1], [-1]), None, "shape \\[-1\\]; expected a list"),
    ("shape of bools", _one([1], [True]), None, "shape \\[True\\]"),
    ("count mismatch", _one([1, 2, 3], [2, 2]), None,
     "'x' 'data' has 3 values; its shape \\[2, 2\\] needs 4"),
    ("ragged", _one([[1, 2], [3]], [2, 2]), None, "not a regular array"),
    ("strings as floats", _one(["1.5"], [1]), None, "holds strings or objects; datatype FP32"),
    ("floats as ints", _one([1.5], [1], "INT64"), None,
     "holds decimals; datatype INT64 needs integers"),
    ("numbers as bool", _one([1], [1], "BOOL"), None, "BOOL needs true/false"),
    ("int8 overflow", _one([300], [1], "INT8"), None, "holds 300, outside INT8's range"),
    ("data not list", _one(5, [1]), None, "'data' must be a list, got a number"),
    ("no data", _body({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32"}]}), None,
     "neither 'data' nor binary_data_size"),
    ("id not string", _body({"id": 5, "inputs": [{"name": "x", "shape": [1], "datatype": "FP32",
     "data": [1]}]}), None, "'id' must be a string"),
    ("outputs not list", _body({"outputs": {}, "inputs": [{"name": "x", "shape": [1],
     "datatype": "FP32", "data": [1]}]}), None, "'outputs' must be a list"),
    ("classification", _body({"outputs": [{"name": "y", "parameters": {"classification": 2}}],
     "inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}), None,
     "output 'y' asks for 'classification'"),
    ("binary flag not bool", _body({"outputs": [{"name": "y", "parameters": {"binary_data": 1}}],
     "inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}), None,
     "'binary_data' must be true or false"),
    ("shared memory", _body({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32",
     "parameters": {"shared_memory_region": "r"}}]}), None, "asks for shared memory"),
    ("header not a number", _one([1], [1]), "abc", "Inference-Header-Content-Length is 'abc'"),
    ("header too long", _one([1], [1]), "100000", "between 1 and the body size"),
    ("header zero", _one([1], [1]), "0", "between 1 and the body size"),
    # issue 17 item 2: an empty shape whose other axis overflows numpy's reshape (was a 500)
    ("shape past int64", _one([], [2**63 - 1, 0]), None,
     "shape \\[9223372036854775807, 0\\], whose non-zero axes multiply to"),
    ("axes multiply past the bound", _one([], [2**16, 2**16, 0]), None,
     "multiply to 4294967296 elements; at most 2147483648"),
    ("binary shape past int64", _body({"inputs": [{"name": "x", "shape": [2**63 - 1, 0],
     "datatype": "FP32", "parameters": {"binary_data_size": 0}}]}), None,
     "shape \\[9223372036854775807, 0\\], whose non-zero axes"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "body", "header", "message"), MALFORMED, ids=[m[0] for m in MALFORMED]
)
def test_malformed_requests_are_bad_requests_naming_the_field(
    case: str, body: bytes, header: str | None, message: str
) -> None:
    with pytest.raises(BadRequestError, match=message) as info:
        decode_infer(body, header)
    assert info.value.http_status == 400


def _binary(size: Any, shape: list[int], payload: bytes) -> tuple[bytes, str]:
    header = _body({"inputs": [{"name": "x", "shape": shape, "datatype": "FP32",
                                "parameters": {"binary_data_size": size}}]})  # fmt: skip
    return header + payload, str(len(header))


@pytest.mark.parametrize(
    ("size", "shape", "payload", "message"),
    [
        (8, [3], bytes(12), "binary_data_size 8; shape \\[3\\] of FP32 needs 12 bytes"),
        (12, [3], bytes(8), "needs bytes 0..12 of the binary data, but only 8"),
        (12, [3], bytes(16), "carries 16 bytes of binary tensor data .* add up to 12"),
        (-4, [3], bytes(12), "binary_data_size must be an integer >= 0"),
        ("12", [3], bytes(12), "binary_data_size must be an integer >= 0"),
    ],
)
def test_binary_sizes_that_do_not_add_up_are_bad_requests(
    size: Any, shape: list[int], payload: bytes, message: str
) -> None:
    body, header = _binary(size, shape, payload)
    with pytest.raises(BadRequestError, match=message):
        decode_infer(body, header)


def test_binary_data_without_the_header_is_refused() -> None:
    body, _ = _binary(12, [3], bytes(12))
    with pytest.raises(BadRequestError, match="not valid JSON"):
        decode_infer(body, None)


def test_the_largest_empty_shape_accepted_decodes() -> None:
    (tensor,) = decode_infer(_one([], [2**31, 0]), None).inputs
    assert tensor.shape == (2**31, 0) and tensor.array.size == 0


DATATYPE_NAMES = [*DATATYPES, "BYTES", "FP8", ""]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    shape=st.lists(
        st.integers(-3, 2**64) | st.sampled_from([0, 1, 2, 2**31, 2**63 - 1]), max_size=6
    )
    | st.integers()
    | st.none(),
    datatype=st.sampled_from(DATATYPE_NAMES),
    values=st.integers(0, 12),
    binary=st.booleans(),
    size_delta=st.integers(-8, 8),
)
def test_the_parser_accepts_a_request_or_refuses_it_with_a_bad_request(
    shape: Any, datatype: str, values: int, binary: bool, size_delta: int
) -> None:
    """Random shapes, datatypes and data lengths: a decoded request whose tensor has the shape
    it declared, or BadRequestError (400); never another exception (issue 17 item 2)."""
    tensor: dict[str, Any] = {"name": "x", "shape": shape, "datatype": datatype}
    payload = b""
    if binary:
        payload = bytes(max(0, values * 4 + size_delta))
        tensor["parameters"] = {"binary_data_size": values * 4 + size_delta}
    else:
        tensor["data"] = [1] * values
    header = json.dumps({"inputs": [tensor]}).encode()  # orjson stops at 64-bit integers
    try:
        request = decode_infer(header + payload, str(len(header)) if binary else None)
    except BadRequestError as exc:
        assert exc.http_status == 400
        return
    (decoded,) = request.inputs
    assert decoded.array.shape == tuple(shape) == decoded.shape
