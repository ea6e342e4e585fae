"""The simple API's decoding and how a prediction and its confidence are read from outputs."""

from __future__ import annotations

import numpy as np
import pytest

from edgeloop.core.errors import DataError
from edgeloop.core.types import TensorSpec
from edgeloop.serving.errors import BadRequestError
from edgeloop.serving.predict import feeds_for, interpret, parse_predict

IMAGE = (TensorSpec("input", (None, 3, 4, 4), "float32"),)
WHERE = "model 'm' version 1"


def test_request_id_is_kept_or_generated() -> None:
    assert parse_predict(b'{"features": [1], "request_id": "r-9"}').request_id == "r-9"
    assert parse_predict(b'{"features": [1], "request_id": 12}').request_id == "12"
    generated = parse_predict(b'{"features": [1]}').request_id
    assert len(generated) == 32 and generated != parse_predict(b'{"features": [1]}').request_id


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{", "not valid JSON"),
        (b'{"x": 1}', "needs a 'features' list"),
        (b'{"features": 3}', "needs a 'features' list"),
        (b'{"features": [1], "request_id": [1]}', "'request_id' must be a string"),
        (b'{"features": [1], "model": 3}', "'model' must be the name"),
    ],
)
def test_bad_bodies_are_bad_requests(body: bytes, message: str) -> None:
    with pytest.raises(BadRequestError, match=message):
        parse_predict(body)


def test_flat_and_nested_features_become_one_sample() -> None:
    flat = parse_predict(b'{"features": [' + b",".join([b"1"] * 48) + b"]}")
    feeds = feeds_for(WHERE, flat, IMAGE, allow_nonfinite=False)
    assert feeds["input"].shape == (1, 3, 4, 4) and feeds["input"].dtype == np.float32
    nested = parse_predict(b'{"features": ' + str(np.ones((3, 4, 4)).tolist()).encode() + b"}")
    assert feeds_for(WHERE, nested, IMAGE, allow_nonfinite=False)["input"].shape == (1, 3, 4, 4)


def test_a_free_axis_takes_its_size_from_the_feature_count() -> None:
    seq = (TensorSpec("x", (None, None, 2), "float32"),)
    request = parse_predict(b'{"features": [1, 2, 3, 4, 5, 6]}')
    assert feeds_for(WHERE, request, seq, allow_nonfinite=False)["x"].shape == (1, 3, 2)


@pytest.mark.parametrize(
    ("features", "message"),
    [
        (b"[1, 2, 3]", "'features' has shape 3 \\(3 values\\); model 'm' version 1 takes one "
         "sample of shape 3x4x4 \\(48 values\\)"),
        (b'["a"]', "must be a non-empty list of numbers"),
        (b"[]", "must be a non-empty list of numbers"),
        (b"[[1, 2], [3]]", "not a regular list of numbers"),
    ],
)  # fmt: skip
def test_features_that_do_not_fit_are_data_errors(features: bytes, message: str) -> None:
    request = parse_predict(b'{"features": ' + features + b"}")
    with pytest.raises(DataError, match=message):
        feeds_for(WHERE, request, IMAGE, allow_nonfinite=False)


def test_nonfinite_features_are_refused_unless_allowed() -> None:
    spec = (TensorSpec("x", (None, 2), "float32"),)
    request = parse_predict(b'{"features": [1e39, 1]}')  # overflows float32 to inf
    with pytest.raises(DataError, match="input 'features' .* NaN/Inf"):
        feeds_for(WHERE, request, spec, allow_nonfinite=False)
    assert np.isinf(feeds_for(WHERE, request, spec, allow_nonfinite=True)["x"][0, 0])


@pytest.mark.parametrize(
    ("dtype", "features", "message"),
    [
        ("int64", b"[1, 2.7]", "value 1 is 2.7"),
        ("int32", b"[1, 1e300]", "value 1 is 1e\\+300"),
        ("uint8", b"[300, 1]", "value 0 is 300.*from 0 to 255"),
        ("uint8", b"[-1, 1]", "value 0 is -1"),
        ("int8", b"[1, 128]", "value 1 is 128.*from -128 to 127"),
        ("bool", b"[1, 2]", "value 1 is 2.*0 or 1"),
    ],
)
def test_values_an_integer_input_cannot_hold_are_data_errors(
    dtype: str, features: bytes, message: str
) -> None:
    spec = (TensorSpec("x", (None, 2), dtype),)
    with pytest.raises(DataError, match=f"input 'x' is {dtype}; 'features' {message}"):
        feeds_for(WHERE, parse_predict(b'{"features": ' + features + b"}"), spec, False)


def test_whole_numbers_reach_an_integer_input_unchanged() -> None:
    spec = (TensorSpec("x", (None, 3), "int64"),)
    request = parse_predict(b'{"features": [1.0, -2, 9007199254740992]}')
    feeds = feeds_for(WHERE, request, spec, allow_nonfinite=False)
    assert feeds["x"].dtype == np.int64 and feeds["x"].tolist() == [[1, -2, 2**53]]
    flags = (TensorSpec("x", (None, 2), "bool"),)
    assert feeds_for(WHERE, parse_predict(b'{"features": [0, 1]}'), flags, False)["x"].tolist() == [
        [False, True]
    ]


def test_several_inputs_point_to_the_protocol_route() -> None:
    specs = (TensorSpec("a", (None, 1)), TensorSpec("b", (None, 1)))
    with pytest.raises(DataError, match="has 2 inputs; /predict serves one") as info:
        feeds_for(WHERE, parse_predict(b'{"features": [1]}'), specs, allow_nonfinite=False)
    assert "/v2/models" in (info.value.hint or "")


def test_interpret_probabilities_logits_and_scores() -> None:
    probs = {"p": np.array([[0.1, 0.7, 0.2]], np.float32)}
    assert interpret(probs) == (1, pytest.approx(0.7))
    logits = {"l": np.array([[0.0, np.log(3.0)]], np.float32)}  # softmax -> 0.25, 0.75
    assert interpret(logits) == (1, pytest.approx(0.75))
    score = {"s": np.array([[0.42]], np.float32)}
    assert interpret(score) == (pytest.approx(0.42), None)
    label = {"label": np.array([3], np.int64)}
    assert interpret(label) == (3, None)
    assert interpret({"p": np.array([[np.nan, 1.0]], np.float32)}) == (None, None)
