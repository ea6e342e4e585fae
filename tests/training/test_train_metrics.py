"""Metrics against values worked out by hand (and cross-checked with sklearn)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score
from torch import nn

from edgeloop.core.errors import ConfigError, DataError
from edgeloop.data.dataset import Dataset, Modality, Task
from edgeloop.training.metrics import (
    Metrics,
    anomaly_metrics,
    anomaly_scores,
    classification_metrics,
    evaluate,
    predict_logits,
)
from edgeloop.training.zoo import ArchConfig, build


def test_accuracy_and_macro_f1_match_the_hand_computed_values() -> None:
    y = np.array([0, 0, 1, 1, 2, 2], dtype=np.int64)
    pred = np.array([0, 1, 1, 1, 2, 0], dtype=np.int64)
    m = classification_metrics(y, pred, num_classes=3, split="hand")
    # class 0: TP 1, FP 1, FN 1 -> F1 2/4; class 1: TP 2, FP 1, FN 0 -> 4/5; class 2: 2/3.
    assert m.accuracy == pytest.approx(4 / 6)
    assert m.macro_f1 == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert m.macro_f1 == pytest.approx(f1_score(y, pred, average="macro"))


def test_a_class_absent_from_labels_and_predictions_does_not_count_in_macro_f1() -> None:
    y = np.array([0, 1, 1], dtype=np.int64)
    pred = np.array([0, 1, 0], dtype=np.int64)
    m = classification_metrics(y, pred, num_classes=4, split="hand")
    assert m.macro_f1 == pytest.approx((2 / 3 + 2 / 3) / 2)
    assert m.macro_f1 == pytest.approx(f1_score(y, pred, average="macro"))


def test_roc_auc_counts_correctly_ordered_pairs() -> None:
    y = np.array([0, 0, 1, 1], dtype=np.int64)
    perfect = anomaly_metrics(y, np.array([0.1, 0.2, 0.9, 0.8], dtype=np.float32), "hand")
    assert perfect.roc_auc == 1.0
    # pairs (anomaly, normal): 0.9>0.1, 0.9>0.85, 0.8>0.1 right, 0.8<0.85 wrong -> 3/4
    one_wrong = anomaly_metrics(y, np.array([0.1, 0.85, 0.9, 0.8], dtype=np.float32), "hand")
    assert one_wrong.roc_auc == pytest.approx(0.75)
    assert one_wrong.accuracy is None and one_wrong.task is Task.ANOMALY


def test_roc_auc_without_both_classes_is_none_with_the_reason() -> None:
    m = anomaly_metrics(np.zeros(3, dtype=np.int64), np.ones(3, dtype=np.float32), "quiet")
    assert m.roc_auc is None
    assert m.note is not None and "'quiet'" in m.note and "[0]" in m.note


def _dataset(x: np.ndarray, y: list[int], classes: int) -> Dataset:
    names = tuple(str(i) for i in range(classes))
    return Dataset(
        "hand", x.astype(np.float32), np.array(y, dtype=np.int64), names, Modality.TABULAR
    )


def test_evaluate_scores_a_fixed_module_on_a_named_split() -> None:
    # nn.Identity's logits are the features themselves, so the predictions are argmax(x).
    x = np.array([[1, 0, 0], [0, 2, 0], [0, 0, 3], [5, 0, 0]])
    m = evaluate(nn.Identity(), _dataset(x, [0, 1, 2, 2], 3))
    assert (m.split, m.samples, m.accuracy) == ("hand", 4, 0.75)
    with pytest.raises(ConfigError, match=r"\(N, 4\)"):
        evaluate(nn.Identity(), _dataset(x, [0, 1, 2, 2], 4))
    with pytest.raises(DataError, match="'hand'"):
        evaluate(nn.Identity(), _dataset(np.zeros((0, 3)), [], 3))


def test_evaluate_rates_an_autoencoder_by_reconstruction_error() -> None:
    ae = build(ArchConfig("autoencoder", (4,), 2, width=4))
    x = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    with torch.no_grad():
        recon = ae.eval()(torch.from_numpy(x)).numpy()
    expected = ((recon - x) ** 2).mean(axis=1)
    np.testing.assert_allclose(anomaly_scores(ae, x), expected, rtol=1e-6)
    y = (expected > np.median(expected)).astype(int).tolist()  # anomalies = the worst half
    m = evaluate(ae, _dataset(x, y, 2))
    assert m.roc_auc == 1.0


def test_predict_logits_batches_and_restores_train_mode() -> None:
    module = nn.Sequential(nn.Linear(3, 2), nn.Dropout(0.5)).train()
    x = np.random.default_rng(1).normal(size=(7, 3)).astype(np.float32)
    out = predict_logits(module, x, batch_size=2)
    assert out.shape == (7, 2) and module.training
    # Another batch size may take another kernel: equal up to float32 rounding, not bit for bit.
    np.testing.assert_allclose(out, predict_logits(module, x, batch_size=7), rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="batch_size 0"):
        predict_logits(module, x, batch_size=0)


def test_metrics_validate_and_round_trip() -> None:
    m = Metrics("test", 10, Task.CLASSIFICATION, accuracy=0.9, macro_f1=0.8)
    assert Metrics.from_dict(m.to_dict()) == m
    assert m.to_dict_floats() == {"accuracy": 0.9, "macro_f1": 0.8, "samples": 10.0}
    with pytest.raises(ConfigError, match="accuracy 1.5"):
        Metrics("test", 10, Task.CLASSIFICATION, accuracy=1.5)
    with pytest.raises(ConfigError, match="got 0"):
        Metrics("test", 0, Task.CLASSIFICATION)
