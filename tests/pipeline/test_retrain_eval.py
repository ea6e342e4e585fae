"""The promotion rule, the recent-data split and the job spec: pure, no model, no disk."""

from __future__ import annotations

import numpy as np
import pytest

from edgeloop.core.errors import ConfigError
from edgeloop.pipeline.retrain_data import split_recent
from edgeloop.pipeline.retrain_eval import Comparison, Score, decide
from edgeloop.pipeline.retrain_spec import Init, RetrainSpec, Trigger


def _cmp(champ_recent: int, chall_recent: int, champ_orig: int, chall_orig: int) -> Comparison:
    return Comparison(
        Score("recent", 100, champ_recent),
        Score("recent", 100, chall_recent),
        Score("original", 1000, champ_orig),
        Score("original", 1000, chall_orig),
    )


def test_a_challenger_better_on_recent_data_within_the_loss_bar_is_promoted() -> None:
    d = decide(_cmp(60, 90, 950, 940), min_recent_gain=0.0, max_original_drop=0.01)
    assert d.promote
    assert d.reason == (
        "promoted: recent hold-out 0.6000 -> 0.9000 (+30.00 pp, 100 samples); "
        "original test 0.9500 -> 0.9400 (-1.00 pp, 1000 samples)"
    )


def test_losing_more_than_the_bar_on_the_original_split_is_refused_with_the_numbers() -> None:
    d = decide(_cmp(60, 90, 950, 939), min_recent_gain=0.0, max_original_drop=0.01)
    assert not d.promote
    assert d.reason == (
        "refused: loses more than 1.00 pp: original test 0.9500 -> 0.9390 (-1.10 pp, 1000 samples)"
    )


def test_no_gain_on_recent_data_is_refused_and_both_failures_are_named() -> None:
    d = decide(_cmp(80, 80, 950, 900), min_recent_gain=0.0, max_original_drop=0.01)
    assert not d.promote
    assert d.reason.startswith("refused: not better on recent data by more than +0.00 pp")
    assert "; loses more than 1.00 pp" in d.reason


def test_a_score_on_an_empty_split_is_refused() -> None:
    with pytest.raises(ConfigError, match="needs at least one sample"):
        Score("recent", 0, 0)


def test_the_recent_split_holds_out_every_class_with_two_samples_and_never_overlaps() -> None:
    y = np.array([0] * 10 + [1] * 2 + [2], dtype=np.int64)
    train, val, hold = split_recent(y, 0.3, seed=0)
    assert sorted([*train, *val, *hold]) == list(range(len(y)))
    assert sorted(y[hold].tolist()) == [0, 0, 0, 1]  # round(10*0.3)=3, max(1, round(0.6))=1
    assert sorted(y[val].tolist()) == [0, 0]  # round(10*0.15); classes under 4 give none
    assert 12 in train  # the single sample of class 2 is trained on
    again = split_recent(y, 0.3, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip((train, val, hold), again, strict=True))


def test_the_spec_round_trips_and_names_bad_fields() -> None:
    spec = RetrainSpec.from_dict(
        {"model": "m:2", "data": ["caps:1"], "init": "scratch", "trigger": "drift-alert"}
    )
    assert spec.init is Init.SCRATCH and spec.trigger is Trigger.DRIFT_ALERT
    assert RetrainSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ConfigError, match=r"fields \['colour'\] are not known"):
        RetrainSpec.from_dict({"model": "m", "data": ["c:1"], "colour": 1})
    with pytest.raises(ConfigError, match="trigger 'cron' is not known; expected one of manual"):
        RetrainSpec.from_dict({"model": "m", "data": ["c:1"], "trigger": "cron"})
    with pytest.raises(ConfigError, match="needs at least one data set"):
        RetrainSpec.from_dict({"model": "m", "data": []})
    with pytest.raises(ConfigError, match="with init 'scratch'"):
        RetrainSpec.from_dict(
            {"model": "m", "data": ["c:1"], "init": "scratch", "checkpoint": "/x"}
        )


def test_a_drift_alert_for_a_policy_model_starts_one_job_on_the_latest_data() -> None:
    from dataclasses import dataclass

    from edgeloop.core.types import ModelRef
    from edgeloop.pipeline.retrain_policy import RetrainPolicy, specs_for
    from edgeloop.registry.datasets import DatasetRef

    @dataclass
    class Alert:  # the fields of control.alerts.Alert this reads
        kind: str
        subject: str

    policy = RetrainPolicy("digits-cnn", ("caps",), options={"epochs": 5})
    alerts = [
        Alert("node_silent", "node-1"),
        Alert("drifting_nodes", "other:1"),
        Alert("accuracy_floor", "digits-cnn:3@node-2"),
        Alert("drifting_nodes", "digits-cnn:3"),  # the same model: one job, the first alert's
    ]
    (spec,) = specs_for(alerts, [policy])
    assert spec.model == ModelRef("digits-cnn", 3) and spec.data == (DatasetRef("caps"),)
    assert spec.trigger is Trigger.ACCURACY_FLOOR and spec.epochs == 5
    with pytest.raises(ConfigError, match=r"alert kinds \['node_silent'\] do not start jobs"):
        RetrainPolicy("m", ("caps",), kinds=frozenset({"node_silent"}))
