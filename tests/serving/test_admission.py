"""The admission gate: a bounded count of requests in flight, refused at once past it."""

from __future__ import annotations

import pytest

from edgeloop.core.errors import ConfigError, OverloadError
from edgeloop.serving.admission import MAX_RETRY_AFTER_S, Gate
from edgeloop.serving.errors import QueueFullError


def test_the_request_past_the_limit_is_refused_with_429_and_retry_after() -> None:
    gate = Gate("cnn", limit=2)
    gate.enter()
    gate.enter()
    with pytest.raises(QueueFullError, match="model 'cnn' has 2 requests in flight") as info:
        gate.enter()
    assert isinstance(info.value, OverloadError)
    assert info.value.http_status == 429 and info.value.retry_after_s >= 1
    assert (gate.in_flight, gate.admitted, gate.refused) == (2, 2, 1)
    gate.leave(0.01)
    gate.enter()  # a slot is free again
    assert gate.in_flight == 2


def test_retry_after_is_the_recent_time_in_the_gate_rounded_up_and_capped() -> None:
    gate = Gate("m", limit=1000)
    assert gate.retry_after_s() == 1  # nothing measured yet: never below 1 s
    for _ in range(60):
        gate.enter()
        gate.leave(2.4)  # requests have been taking 2.4 s from admission to answer
    assert gate.retry_after_s() == 3
    for _ in range(200):
        gate.enter()
        gate.leave(500.0)
    assert gate.retry_after_s() == MAX_RETRY_AFTER_S


def test_limits_below_one_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="queue limit 0"):
        Gate("m", limit=0)
