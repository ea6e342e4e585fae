"""The cascade with two real models: routing by confidence, counts, remote failure fallback."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from tests.tiny_models import make_linear_onnx

from edgeloop.core.errors import ConfigError, DataError, TransportError
from edgeloop.runtime import Cascade, LoadedModel, Scores, SessionConfig, confidence, load_model
from edgeloop.runtime.engine import Feeds, Outputs

ONE = SessionConfig(intra_op_threads=1)
X = np.random.default_rng(7).standard_normal((40, 4)).astype(np.float32) * 2


@pytest.fixture(scope="module")
def small(linear_path: Path) -> LoadedModel:
    return load_model(linear_path, ONE)


@pytest.fixture(scope="module")
def large(models_dir: Path) -> LoadedModel:
    return load_model(make_linear_onnx(models_dir / "large.onnx", seed=3), ONE)


def _threshold(small: LoadedModel) -> float:
    """The median confidence of the small model on X: about half the rows escalate."""
    return float(np.median(confidence(small.run({"input": X})["output"])))


def test_only_unsure_rows_go_to_the_large_model(small: LoadedModel, large: LoadedModel) -> None:
    threshold = _threshold(small)
    cascade = Cascade(small, large, threshold)
    result = asyncio.run(cascade.predict({"input": X}))
    small_out = small.run({"input": X})["output"]
    large_out = large.run({"input": X})["output"]
    expected_mask = confidence(small_out) < threshold
    assert 0 < expected_mask.sum() < len(X)
    np.testing.assert_array_equal(result.escalated, expected_mask)
    np.testing.assert_array_equal(result.answered_by_large, expected_mask)
    got = result.outputs["output"]
    np.testing.assert_allclose(got[expected_mask], large_out[expected_mask], atol=1e-6)
    np.testing.assert_allclose(got[~expected_mask], small_out[~expected_mask], atol=1e-6)
    stats = cascade.stats()
    assert (stats.requests, stats.rows, stats.large_calls) == (1, 40, 1)
    assert stats.escalated_rows == int(expected_mask.sum())
    assert stats.fallbacks == 0


def test_confident_rows_never_call_the_large_model(small: LoadedModel) -> None:
    calls: list[int] = []

    async def remote(feeds: Feeds) -> Outputs:
        calls.append(len(feeds["input"]))
        raise AssertionError("must not be called")

    cascade = Cascade(small, remote, threshold=1e-9)
    result = asyncio.run(cascade.predict({"input": X[:5]}))
    assert calls == [] and not result.escalated.any()
    assert cascade.stats().large_calls == 0


def test_remote_tier_gets_only_the_escalated_rows(small: LoadedModel, large: LoadedModel) -> None:
    received: list[np.ndarray] = []

    async def parent_tier(feeds: Feeds) -> Outputs:
        received.append(feeds["input"])
        return large.run(feeds)

    threshold = _threshold(small)
    result = asyncio.run(Cascade(small, parent_tier, threshold).predict({"input": X}))
    assert len(received) == 1
    np.testing.assert_array_equal(received[0], X[result.escalated])


def test_failed_remote_falls_back_to_the_small_answer_and_is_counted(small: LoadedModel) -> None:
    async def down(feeds: Feeds) -> Outputs:
        raise TransportError("parent tier http://tier2:8080 refused the connection")

    cascade = Cascade(small, down, _threshold(small))
    result = asyncio.run(cascade.predict({"input": X}))
    np.testing.assert_allclose(result.outputs["output"], small.run({"input": X})["output"])
    assert result.escalated.any() and not result.answered_by_large.any()
    assert result.fallback_reason is not None and "tier2:8080" in result.fallback_reason
    stats = cascade.stats()
    assert stats.fallbacks == 1 and stats.large_calls == 1
    assert stats.last_fallback == result.fallback_reason


def test_slow_remote_times_out_into_a_fallback(small: LoadedModel) -> None:
    async def hangs(feeds: Feeds) -> Outputs:
        await asyncio.sleep(30)
        raise AssertionError("unreachable")

    cascade = Cascade(small, hangs, _threshold(small), timeout_s=0.05)
    result = asyncio.run(cascade.predict({"input": X}))
    assert result.fallback_reason == "large model did not answer within 0.05 s"
    assert cascade.stats().fallbacks == 1


def test_large_answer_of_the_wrong_shape_is_a_fallback(small: LoadedModel) -> None:
    async def wrong(feeds: Feeds) -> Outputs:
        return {"output": np.zeros((1, 7), np.float32)}

    result = asyncio.run(Cascade(small, wrong, _threshold(small)).predict({"input": X}))
    assert result.fallback_reason is not None and "shape (1, 7)" in result.fallback_reason


def test_a_sync_callable_runs_as_the_large_model(small: LoadedModel, large: LoadedModel) -> None:
    result = asyncio.run(Cascade(small.run, large.run, _threshold(small)).predict({"input": X}))
    assert result.answered_by_large.sum() == result.escalated.sum() > 0


def test_missing_score_output_names_it(small: LoadedModel, large: LoadedModel) -> None:
    cascade = Cascade(small, large, 0.5, score_output="probs")
    with pytest.raises(DataError, match=r"'probs' is not among.*\['output'\]"):
        asyncio.run(cascade.predict({"input": X}))


@pytest.mark.parametrize("threshold", [0.0, -0.1, 1.5])
def test_bad_threshold_names_the_value(small: LoadedModel, threshold: float) -> None:
    with pytest.raises(ConfigError, match=f"threshold {threshold}"):
        Cascade(small, small, threshold)


def test_confidence_of_logits_and_probabilities() -> None:
    logits = np.array([[0.0, 0.0], [10.0, 0.0]])
    np.testing.assert_allclose(confidence(logits), [0.5, 1 / (1 + np.exp(-10.0))])
    probs = np.array([[0.2, 0.8], [0.5, 0.5]])
    np.testing.assert_allclose(confidence(probs), [0.8, 0.5])
    np.testing.assert_allclose(confidence(probs, Scores.LOGITS), [1 / (1 + np.exp(-0.6)), 0.5])
    with pytest.raises(DataError, match=r"shape \(3,\)"):
        confidence(np.zeros(3))


@settings(deadline=None)  # no per-example time limit: a loaded CI machine stalls at will
@given(
    arrays(
        np.float64, st.tuples(st.integers(1, 6), st.integers(1, 8)), elements=st.floats(-1e3, 1e3)
    )
)
def test_confidence_is_between_one_over_k_and_one(scores: Any) -> None:
    conf = confidence(scores, Scores.LOGITS)
    k = scores.shape[1]
    assert np.all(conf >= 1.0 / k - 1e-9) and np.all(conf <= 1.0 + 1e-9)


def test_a_row_with_nan_or_inf_has_confidence_zero_and_does_not_spoil_the_others() -> None:
    probs = np.array([[0.2, 0.8], [np.nan, 0.5], [0.6, 0.4], [np.inf, 0.0], [-np.inf, 1.0]])
    conf = confidence(probs)
    assert np.all(np.isfinite(conf))
    # The finite rows are still read as the probabilities they are (not softmaxed as logits).
    np.testing.assert_allclose(conf, [0.8, 0.0, 0.6, 0.0, 0.0])
    np.testing.assert_allclose(confidence(np.full((2, 3), np.nan)), [0.0, 0.0])
    assert confidence(np.zeros((0, 4))).shape == (0,)


@settings(deadline=None)  # no per-example time limit: a loaded CI machine stalls at will
@given(
    arrays(
        np.float64,
        st.tuples(st.integers(1, 6), st.integers(1, 8)),
        elements=st.floats(allow_nan=True, allow_infinity=True),
    )
)
def test_confidence_is_always_a_number_in_zero_one(scores: Any) -> None:
    conf = confidence(scores)
    assert conf.shape == (scores.shape[0],)
    assert np.all(np.isfinite(conf)) and np.all((conf >= 0) & (conf <= 1.0 + 1e-9))
    bad = ~np.isfinite(scores).all(axis=1)
    assert np.all(conf[bad] == 0.0)


def test_a_row_spanning_more_than_the_float64_range_is_still_a_confidence() -> None:
    # Found by hypothesis in CI: the max-shift itself overflowed to -inf (a RuntimeWarning).
    conf = confidence(np.array([[1.79769313e308, -9.97920155e291]]))
    np.testing.assert_allclose(conf, [1.0])


def test_the_cascade_sends_a_nan_row_up(large: LoadedModel) -> None:
    def small(feeds: Feeds) -> Outputs:
        scores = large.run(feeds)["output"].copy()  # the large model's shape and kind
        scores[:, 0] = 50.0  # sure of class 0 (logits)...
        scores[1] = np.nan  # ...except row 1: a numerical failure in the small model
        return {"output": scores}

    cascade = Cascade(small, large, 0.5)
    x = np.ones((3, 4), np.float32)
    result = asyncio.run(cascade.predict({"input": x}))
    assert result.fallback_reason is None
    assert result.escalated.tolist() == [False, True, False]
    assert result.answered_by_large.tolist() == [False, True, False]
    assert np.all(np.isfinite(result.outputs["output"][1]))
