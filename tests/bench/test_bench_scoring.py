"""Accuracy and ROC-AUC from model outputs: checked against scikit-learn and by hand."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from edgeloop.bench.scoring import accuracy, roc_auc, score_outputs
from edgeloop.core.errors import ConfigError
from edgeloop.data.dataset import Task


def test_accuracy_by_hand() -> None:
    logits = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    assert accuracy(logits, np.array([1, 0, 0, 0])) == 0.75


@settings(max_examples=60, deadline=None)
@given(
    labels=st.lists(st.integers(0, 1), min_size=2, max_size=40).filter(
        lambda y: 0 < sum(y) < len(y)
    ),
    data=st.data(),
)
def test_roc_auc_matches_sklearn_with_ties(labels: list[int], data: st.DataObject) -> None:
    # Scores from a small set of values, so ties (which count one half) are common.
    scores = data.draw(st.lists(st.integers(0, 5), min_size=len(labels), max_size=len(labels)))
    y = np.array(labels, dtype=np.int64)
    s = np.array(scores, dtype=np.float64)
    assert roc_auc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_roc_auc_needs_both_classes() -> None:
    with pytest.raises(ConfigError, match="3 anomalous, 0 normal"):
        roc_auc(np.array([0.1, 0.2, 0.3]), np.array([1, 1, 1]))


def test_classification_with_the_wrong_number_of_classes_is_none_with_reason() -> None:
    score = score_outputs(
        np.zeros((4, 3)),
        np.zeros((4, 2)),
        np.zeros(4, dtype=np.int64),
        Task.CLASSIFICATION,
        10,
        "s",
    )
    assert score.accuracy is None
    assert score.note is not None and "[4, 3]" in score.note and "10 classes" in score.note


def test_anomaly_from_reconstruction_error() -> None:
    x = np.array([[0.0, 0.0], [1.0, 1.0], [3.0, 3.0], [0.5, 0.0]])
    reconstruction = np.zeros_like(x)  # error grows with |x|
    y = np.array([0, 1, 1, 0])
    score = score_outputs(reconstruction, x, y, Task.ANOMALY, 2, "set")
    assert score.accuracy is None
    assert score.roc_auc == 1.0
    assert score.note is not None and "ROC-AUC" in score.note


def test_anomaly_with_one_class_is_none_with_reason() -> None:
    score = score_outputs(
        np.zeros((3, 1)), np.zeros((3, 4)), np.zeros(3, np.int64), Task.ANOMALY, 2, "s"
    )
    assert score.roc_auc is None
    assert score.note is not None and "0 anomalous" in score.note


def test_anomaly_output_of_unknown_shape_is_none_with_reason() -> None:
    score = score_outputs(
        np.zeros((3, 5)), np.zeros((3, 4)), np.array([0, 1, 0]), Task.ANOMALY, 2, "s"
    )
    assert score.roc_auc is None
    assert score.note is not None and "[3, 5]" in score.note
