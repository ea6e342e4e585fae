"""Round records and plateau detection."""

from __future__ import annotations

import numpy as np
import pytest

from edgeloop.core.errors import ConfigError
from edgeloop.federated import ClientUpdate
from edgeloop.federated.convergence import (
    Metric,
    PlateauRule,
    RoundRecord,
    detect_plateau,
    record_round,
)


def test_record_has_norms_divergence_and_weighted_client_metrics() -> None:
    ups = [
        ClientUpdate("a", 1, 1, np.array([0.0, 0.0]), {"loss": 1.0, "accuracy": 0.5}),
        ClientUpdate("b", 1, 3, np.array([4.0, 0.0]), {"loss": 2.0}),
    ]
    rec = record_round(1, np.zeros(2), np.array([3.0, 4.0]), ups, dropouts=2, epsilon=1.5)
    assert rec.update_norm == pytest.approx(5.0)
    # ||(0,0)-(3,4)|| = 5, ||(4,0)-(3,4)|| = sqrt(17)
    assert rec.divergence == pytest.approx((5.0 + 17**0.5) / 2)
    assert rec.client_loss == pytest.approx((1 * 1.0 + 3 * 2.0) / 4)
    assert rec.client_accuracy == pytest.approx(0.5)  # only "a" reported it
    assert (rec.participants, rec.dropouts, rec.epsilon) == (2, 2, 1.5)


def test_under_secure_aggregation_divergence_is_unknown() -> None:
    rec = record_round(1, np.zeros(2), np.ones(2), [], participants=7)
    assert rec.divergence is None and rec.participants == 7 and rec.client_loss is None


def history(metric: str, values: list[float]) -> list[RoundRecord]:
    return [
        RoundRecord(
            round=i + 1, participants=1, dropouts=0, rejected=0, update_norm=0.0, **{metric: v}
        )  # type: ignore[arg-type]
        for i, v in enumerate(values)
    ]


def test_plateau_stops_after_patience_rounds_without_improvement() -> None:
    rule = PlateauRule(Metric.GLOBAL_LOSS, patience=2, min_delta=0.01)
    going = detect_plateau(history("global_loss", [1.0, 0.8, 0.7, 0.695]), rule)
    assert not going.stop and going.best_round == 3 and going.rounds_since_best == 1
    flat = detect_plateau(history("global_loss", [1.0, 0.8, 0.7, 0.695, 0.699]), rule)
    assert flat.stop and flat.best_value == pytest.approx(0.7)
    assert "plateau: best global_loss 0.7 at round 3" in flat.reason


def test_accuracy_is_maximised() -> None:
    rule = PlateauRule(Metric.GLOBAL_ACCURACY, patience=1)
    assert not detect_plateau(history("global_accuracy", [0.5, 0.6]), rule).stop
    assert detect_plateau(history("global_accuracy", [0.5, 0.6, 0.55]), rule).stop


def test_no_metric_yet_never_stops_and_bad_rules_are_refused() -> None:
    assert not detect_plateau(history("global_loss", []), PlateauRule()).stop
    with pytest.raises(ConfigError, match="patience"):
        PlateauRule(patience=0)
