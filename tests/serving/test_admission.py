"""The admission gate: a bounded count of requests in flight, refused at once past it."""

from __future__ import annotations

import pytest

from edgeloop.core.errors import ConfigError, OverloadError
from edgeloop.serving.admission import MAX_RETRY_AFTER_S, Gate, QueueDelay, QueueDelayError
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


def test_a_request_that_would_wait_past_the_delay_budget_is_refused() -> None:
    gate = Gate("slow", limit=64, max_delay_s=0.05)
    gate.enter()
    gate.leave(0.02, work_s=0.02)  # measured: 20 ms of engine time a request (EWMA from 0)
    for _ in range(60):
        gate.enter()
        gate.leave(0.02, work_s=0.02)
    assert abs(gate.work_s - 0.02) < 0.001
    gate.enter()
    gate.enter()
    gate.enter()  # the 3rd had 2 ahead: ~40 ms of work, within 50 ms
    with pytest.raises(QueueFullError, match="above the queue delay budget") as info:
        gate.enter()  # would have 3 ahead: ~60 ms
    assert "--max-queue-delay-ms 50" in info.value.message
    assert (gate.in_flight, gate.refused) == (3, 1)
    gate.leave(0.04, work_s=0.02)
    gate.enter()  # one finished: room again


def test_without_a_delay_budget_only_the_count_limits() -> None:
    gate = Gate("m", limit=3, max_delay_s=0.0)
    gate.work_s = 10.0  # however slow each request is
    for _ in range(3):
        gate.enter()
    with pytest.raises(QueueFullError, match="queue limit"):
        gate.enter()


def test_an_idle_gate_always_admits_and_bad_budgets_are_config_errors() -> None:
    gate = Gate("m", limit=5, max_delay_s=0.001)
    gate.work_s = 1.0  # slower than the budget: still, with nothing ahead it waits for nothing
    gate.enter()
    with pytest.raises(ConfigError, match="queue delay budget -1"):
        Gate("m", limit=1, max_delay_s=-1)


def test_the_queue_delay_setting_is_checked_and_shown() -> None:
    from edgeloop.serving.config import ServerConfig

    assert ServerConfig().to_dict()["max_queue_delay_ms"] == 1000.0
    assert ServerConfig(max_queue_delay_ms=0).max_queue_delay_ms == 0  # 0: no delay bound
    with pytest.raises(ConfigError, match=r"max_queue_delay_ms=-5 \(expected >= 0\)"):
        ServerConfig(max_queue_delay_ms=-5)


def test_a_request_that_already_waited_past_the_budget_is_refused_as_a_delay() -> None:
    delay = QueueDelay(0.1)
    delay.check("cnn", 0.05, now=10.0)  # within the budget
    QueueDelay(0.0).check("cnn", 5.0, now=10.0)  # no budget: no bound
    with pytest.raises(QueueDelayError, match="waited 150 ms in the server") as info:
        delay.check("cnn", 0.15, now=10.01)
    assert isinstance(info.value, QueueFullError) and info.value.http_status == 429
    assert "--max-queue-delay-ms 100" in info.value.message
    with pytest.raises(ConfigError, match="queue delay budget -1"):
        QueueDelay(-1)


def test_a_standing_queue_tightens_the_bound_to_the_target_and_a_short_wait_restores_it() -> None:
    delay = QueueDelay(0.2)  # target 50 ms, interval 100 ms
    assert (delay.target_s, delay.interval_s) == (0.05, 0.1)
    now = 100.0
    assert delay.admits(0.0, now)  # idle server: short
    # Sustained overload: every request waited 150 ms, each arriving before the previous turn.
    admitted = []
    for _ in range(39):
        now += 0.01
        admitted.append(delay.admits(0.15, now))
    # Admitted within the budget while the last short wait is recent (100 ms), then refused:
    # the limit has dropped to the 50 ms target.
    assert admitted[:9] == [True] * 9 and not any(admitted[11:])
    assert delay.limit_s(now) == 0.05
    with pytest.raises(QueueDelayError, match="a quarter of the budget, 50 ms"):
        delay.check("cnn", 0.15, now + 0.001)
    assert delay.admits(0.04, now + 0.002)  # a short wait again: the queue drained
    assert delay.limit_s(now + 0.003) == 0.2 and delay.admits(0.15, now + 0.003)


def test_a_request_arriving_after_an_idle_gap_counts_as_short() -> None:
    delay = QueueDelay(0.2)
    delay.admits(0.0, 100.0)
    for i in range(1, 31):  # a standing queue...
        delay.admits(0.15, 100.0 + 0.01 * i)
    assert delay.limit_s(100.3) == 0.05
    # ...then a quiet second; the next request arrived after the previous turn: no one ahead.
    assert delay.admits(0.12, 101.5) and delay.limit_s(101.5) == 0.2
