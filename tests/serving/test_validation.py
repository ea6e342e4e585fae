"""Does a decoded request fit the model: each mismatch is a 422 naming tensor, expected and got."""

from __future__ import annotations

import numpy as np
import pytest

from edgeloop.core.errors import DataError
from edgeloop.core.types import TensorSpec
from edgeloop.serving.oip import InputTensor, RequestedOutput
from edgeloop.serving.validation import check_finite, check_inputs, check_outputs

WHERE = "model 'm' version 1"
SPECS = (TensorSpec("a", (None, 2), "float32"), TensorSpec("n", (None, 1), "int64"))
OUTS = (TensorSpec("y", (None, 2)), TensorSpec("z", (None, 1), "int64"))


def _t(name: str, array: np.ndarray, datatype: str | None = None) -> InputTensor:
    kind = {"float32": "FP32", "int64": "INT64", "float64": "FP64"}[array.dtype.name]
    return InputTensor(name, datatype or kind, array.shape, array)


def _good() -> list[InputTensor]:
    return [_t("n", np.ones((3, 1), np.int64)), _t("a", np.zeros((3, 2), np.float32))]


def test_good_inputs_come_back_in_the_model_order() -> None:
    feeds = check_inputs(WHERE, _good(), SPECS)
    assert list(feeds) == ["a", "n"]
    assert feeds["a"].shape == (3, 2) and feeds["n"].dtype == np.int64


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        ([_t("a", np.zeros((1, 2), np.float32))], "input 'n' missing; model 'm' version 1 expects"),
        (
            [*_good(), _t("extra", np.zeros((1, 2), np.float32))],
            "input 'extra' is not an input of model 'm' version 1; it expects 'a' \\(FP32 \\?x2\\)",
        ),
        (
            [_t("a", np.zeros((1, 2), np.float32)), *_good()],
            "input 'a' is given twice",
        ),
        (
            [_t("a", np.zeros((1, 2), np.float64)), _t("n", np.ones((1, 1), np.int64))],
            "input 'a' has datatype FP64; model 'm' version 1 expects FP32",
        ),
        (
            [_t("a", np.zeros((1, 3), np.float32)), _t("n", np.ones((1, 1), np.int64))],
            "input 'a' has shape \\[1, 3\\]; .* expects \\[-1, 2\\] \\(axis 1 is 3, expected 2\\)",
        ),
        (
            [_t("a", np.zeros((2,), np.float32)), _t("n", np.ones((1, 1), np.int64))],
            "input 'a' has shape \\[2\\]; .*\\(rank 1, expected rank 2\\)",
        ),
        (
            [_t("a", np.zeros((0, 2), np.float32)), _t("n", np.ones((0, 1), np.int64))],
            "input 'a' has shape \\[0, 2\\]; .*\\(axis 0 is empty\\)",
        ),
        (
            [_t("a", np.zeros((2, 2), np.float32)), _t("n", np.ones((3, 1), np.int64))],
            "disagree on the batch size \\(axis 0\\): 'a' has 2, 'n' has 3",
        ),
    ],
)
def test_inputs_that_do_not_fit_are_data_errors(tensors: list[InputTensor], message: str) -> None:
    with pytest.raises(DataError, match=message) as info:
        check_inputs(WHERE, tensors, SPECS)
    assert info.value.http_status == 422


def test_nan_and_inf_are_refused_naming_the_first_position() -> None:
    a = np.zeros((2, 2), np.float32)
    a[1, 0] = np.inf
    a[1, 1] = np.nan
    tensors = [_t("a", a), _t("n", np.ones((2, 1), np.int64))]
    with pytest.raises(
        DataError,
        match="input 'a' .* holds 2 NaN/Inf value\\(s\\), the first at flat index 2 \\(inf\\)",
    ):
        check_inputs(WHERE, tensors, SPECS)
    feeds = check_inputs(WHERE, tensors, SPECS, allow_nonfinite=True)
    assert np.isnan(feeds["a"][1, 1])


def test_check_finite_passes_finite_arrays() -> None:
    check_finite(WHERE, "a", np.ones((4, 4), np.float32))


def test_outputs_default_to_all_and_unknown_ones_are_named() -> None:
    assert check_outputs(WHERE, None, OUTS) == ("y", "z")
    assert check_outputs(WHERE, (RequestedOutput("z", True),), OUTS) == ("z",)
    with pytest.raises(
        DataError, match="output 'w' is not an output of .* its outputs are 'y', 'z'"
    ):
        check_outputs(WHERE, (RequestedOutput("w", False),), OUTS)
    with pytest.raises(DataError, match="names an output twice"):
        check_outputs(WHERE, (RequestedOutput("y", False), RequestedOutput("y", True)), OUTS)


def test_a_fixed_axis_must_match_and_a_free_one_takes_any_size() -> None:
    specs = (TensorSpec("img", (1, 3, None), "float32"),)
    check_inputs(WHERE, [_t("img", np.zeros((1, 3, 17), np.float32))], specs)
    with pytest.raises(DataError, match="axis 0 is 2, expected 1"):
        check_inputs(WHERE, [_t("img", np.zeros((2, 3, 17), np.float32))], specs)
