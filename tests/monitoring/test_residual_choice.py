"""Which references get the residual part: those too small for their features, or when asked."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from edgeloop.core.errors import ConfigError
from edgeloop.monitoring import DriftMonitor, MonitorConfig


def _reference(rows: int, features: int) -> np.ndarray:
    rng = np.random.default_rng(5)
    mix = rng.normal(size=(features, features)) / 3 + np.eye(features)
    return rng.normal(size=(rows, features)) @ mix


@pytest.mark.parametrize(
    ("rows", "features", "settings", "watched"),
    [
        (40, 12, {}, True),  # BasicMotions' size: 40 < 5 x 12
        (400, 12, {}, False),  # enough rows to whiten what matters
        (400, 12, {"residual": True}, True),  # asked for
        (40, 12, {"residual_rows_per_feature": 0.0}, False),  # the automatic choice off
    ],
)
def test_the_residual_part_is_watched_for_a_small_reference_or_when_asked(
    fast: MonitorConfig, rows: int, features: int, settings: dict[str, Any], watched: bool
) -> None:
    config = replace(fast, **settings)
    mon = DriftMonitor.fit(_reference(rows, features), config=config)
    assert (mon.profile.input.residual_threshold is not None) is watched
    assert config.watches_residual(rows, features) is watched


def test_the_residual_part_keeps_the_other_thresholds_where_they_were(fast: MonitorConfig) -> None:
    # Its own target: watching it does not raise the location and energy thresholds.
    reference = _reference(40, 12)
    on = DriftMonitor.fit(reference, config=fast).profile.input
    off = DriftMonitor.fit(reference, config=replace(fast, residual_rows_per_feature=0.0))
    assert on.residual_threshold is not None
    assert on.thresholds[:2] == off.profile.input.thresholds


@pytest.mark.parametrize("bad", [{"residual_rows_per_feature": -1.0},
                                 {"residual_alarms_per_1000": 0.0}])  # fmt: skip
def test_a_bad_residual_setting_is_refused_by_name(bad: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=next(iter(bad))):
        MonitorConfig(**bad)
