"""The control loop's settings: a TUF timestamp is never served too close to its expiry."""

from __future__ import annotations

import math

import pytest

from edgeloop.control.loop import MIN_MARGIN_S, check_settings, timestamp_margin_s
from edgeloop.core.errors import ConfigError


def test_margin_is_half_the_lifetime_less_the_check_period_and_a_second() -> None:
    assert timestamp_margin_s(86400, 1.0) == 43200 - 60 - 1  # checked every minute
    assert timestamp_margin_s(12, 0.1) == pytest.approx(6 - 1.2 - 1)  # every tenth of 12 s
    assert timestamp_margin_s(8, 1.0) == 4 - 1 - 1  # every tick: the tick is the longer


def test_a_lifetime_too_short_for_the_tick_is_refused_naming_the_least_that_works() -> None:
    with pytest.raises(ConfigError) as info:
        check_settings(4, 1.0)
    assert "--timestamp-expiry-s 4" in info.value.message
    assert info.value.hint is not None and "--timestamp-expiry-s 8 or more" in info.value.hint
    check_settings(8, 1.0)  # the least it names is accepted
    check_settings(12, 0.1)
    check_settings(86400, 1.0)


@pytest.mark.parametrize("tick", [1.0, 0.1, 0.05, 2.5, 30.0])
def test_the_least_lifetime_named_is_the_least_accepted(tick: float) -> None:
    with pytest.raises(ConfigError) as info:
        check_settings(2, tick)
    assert info.value.hint is not None
    least = int(info.value.hint.split("--timestamp-expiry-s ")[1].split()[0])
    assert timestamp_margin_s(least, tick) >= MIN_MARGIN_S
    check_settings(least, tick)
    with pytest.raises(ConfigError):
        check_settings(least - 1, tick)


@pytest.mark.parametrize("tick", [0.0, -1.0, math.nan, math.inf])
def test_a_tick_that_is_not_a_positive_time_is_refused(tick: float) -> None:
    with pytest.raises(ConfigError, match="--tick-s"):
        check_settings(86400, tick)
