"""Scheduled retraining: the interval and time-of-day forms, the slots, when a slot is due (pure:
no clock, no disk), and the policy file's ``schedule`` field."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edgeloop.core.errors import ConfigError
from edgeloop.pipeline.retrain_policy import RetrainPolicy, load_policies, scheduled_spec
from edgeloop.pipeline.retrain_schedule import DAY_S, Schedule, due, parse_at, parse_every


def _t(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("2s", 2), ("90m", 5400), ("24h", DAY_S), ("7d", 7 * DAY_S), ("1s", 1), ("36h", 129_600)],
)
def test_an_interval_is_a_whole_number_and_a_unit(text: str, seconds: int) -> None:
    assert parse_every(text) == seconds


@pytest.mark.parametrize(
    "bad", ["0h", "24", "h", "1.5h", "24 h", "-1h", "", "1w", "24H", "01h", "99999999s", 24, None]
)
def test_a_bad_interval_is_refused_naming_the_value_and_the_form(bad: object) -> None:
    with pytest.raises(ConfigError) as err:
        parse_every(bad)
    assert repr(bad) in err.value.message and "'24h'" in err.value.message


@pytest.mark.parametrize(("text", "seconds"), [("00:00", 0), ("02:00", 7200), ("23:59", 86_340)])
def test_a_time_of_day_is_hh_mm(text: str, seconds: int) -> None:
    assert parse_at(text) == seconds


@pytest.mark.parametrize("bad", ["24:00", "2:00", "02:60", "0200", "02:00:00", "", 200, None])
def test_a_bad_time_of_day_is_refused_naming_the_value_and_the_form(bad: object) -> None:
    with pytest.raises(ConfigError) as err:
        parse_at(bad)
    assert repr(bad) in err.value.message and "'HH:MM'" in err.value.message


@pytest.mark.parametrize(
    "doc",
    [{}, [], "24h", None, {"every": "24h", "colour": 1}, {"every": "5h", "at": "02:00"},
     {"every": "7m", "at": "00:00"}, {"every": "25h", "at": "02:00"}],
)  # fmt: skip
def test_a_bad_schedule_is_refused(doc: object) -> None:
    with pytest.raises(ConfigError, match="schedule"):
        Schedule.from_dict(doc)


def test_an_interval_that_does_not_recur_at_the_time_of_day_names_both() -> None:
    with pytest.raises(ConfigError) as err:
        Schedule.from_dict({"every": "5h", "at": "02:00"})
    assert "'5h'" in err.value.message and "'02:00'" in err.value.message


@pytest.mark.parametrize(
    ("doc", "text"),
    [({"every": "24h"}, "every 1d"), ({"at": "02:00"}, "every 1d at 02:00"),
     ({"every": "90m"}, "every 90m"), ({"every": "6h", "at": "02:30"}, "every 6h at 02:30"),
     ({"every": "48h", "at": "23:59"}, "every 2d at 23:59"), ({"every": "2s"}, "every 2s")],
)  # fmt: skip
def test_a_schedule_round_trips_through_its_canonical_form(doc: dict[str, str], text: str) -> None:
    schedule = Schedule.from_dict(doc)
    assert schedule.text == text
    assert Schedule.from_dict(schedule.to_dict()) == schedule


@pytest.mark.parametrize(
    ("doc", "now", "latest", "following"),
    [
        ({"every": "6h"}, "2026-12-07T13:00:00", "2026-12-07T12:00:00", "2026-12-07T18:00:00"),
        ({"every": "6h"}, "2026-12-07T12:00:00", "2026-12-07T12:00:00", "2026-12-07T18:00:00"),
        ({"at": "02:00"}, "2026-12-07T01:59:59", "2026-12-06T02:00:00", "2026-12-07T02:00:00"),
        ({"at": "02:00"}, "2026-12-07T02:00:00", "2026-12-07T02:00:00", "2026-12-08T02:00:00"),
        ({"at": "02:00", "every": "6h"}, "2026-12-07T01:00:00", "2026-12-06T20:00:00",
         "2026-12-07T02:00:00"),
        ({"every": "90m"}, "2026-12-07T02:59:00", "2026-12-07T01:30:00", "2026-12-07T03:00:00"),
        ({"every": "7d"}, "2026-12-07T00:00:00", "2026-12-03T00:00:00", "2026-12-10T00:00:00"),
        ({"every": "2s"}, "2026-12-07T00:00:03.5", "2026-12-07T00:00:02", "2026-12-07T00:00:04"),
    ],
)  # fmt: skip
def test_the_slots_are_counted_in_utc_from_the_epoch(
    doc: dict[str, str], now: str, latest: str, following: str
) -> None:
    schedule = Schedule.from_dict(doc)
    assert schedule.latest(_t(now)) == _t(latest)
    assert schedule.next_after(_t(now)) == _t(following)


def test_every_instant_lies_in_exactly_one_slot_interval_over_many_schedules_and_times() -> None:
    rng = random.Random(0)
    forms = ["1s", "2s", "7s", "90m", "5h", "6h", "24h", "2d", "7d"]
    for _ in range(2000):
        every = rng.choice(forms)
        at = rng.choice([None, "00:00", "02:00", "13:37"])
        doc = {"every": every} if at is None else {"every": every, "at": at}
        try:
            schedule = Schedule.from_dict(doc)
        except ConfigError:
            assert at is not None and every in ("7s", "5h")  # those do not recur daily
            continue
        now = rng.uniform(0, 4e9)
        slot = schedule.latest(now)
        assert slot <= now < slot + schedule.every_s
        assert (slot - (schedule.at_s or 0)) % schedule.every_s == 0
        if schedule.at_s is not None and DAY_S % schedule.every_s == 0:
            named = now // DAY_S * DAY_S + schedule.at_s  # that time of day, on now's day
            assert schedule.latest(named) == named


def test_a_slot_is_due_once_and_missed_slots_coalesce_into_the_latest() -> None:
    schedule = Schedule.from_dict({"every": "24h", "at": "02:00"})
    handled = int(_t("2026-12-07T02:00:00"))
    assert due(schedule, handled, _t("2026-12-07T02:00:00")) is None
    assert due(schedule, handled, _t("2026-12-08T01:59:59")) is None
    assert due(schedule, handled, _t("2026-12-08T02:00:00")) == _t("2026-12-08T02:00:00")
    # Down for three days: one job, for the latest slot; then nothing until the next one.
    late = due(schedule, handled, _t("2026-12-10T09:00:00"))
    assert late == _t("2026-12-10T02:00:00")
    assert late is not None and due(schedule, late, _t("2026-12-10T23:00:00")) is None
    assert due(schedule, late, _t("2026-12-11T02:00:00")) == _t("2026-12-11T02:00:00")


def test_a_schedule_only_policy_and_its_job(tmp_path: Path) -> None:
    path = tmp_path / "policies.json"
    doc = {"policies": [{"model": "digits-cnn", "data": ["caps"], "kinds": [],
                         "schedule": {"every": "12h", "at": "02:00"},
                         "options": {"epochs": 3}}]}  # fmt: skip
    path.write_text(json.dumps(doc))
    (policy,) = load_policies(path)
    assert policy.kinds == frozenset() and policy.schedule == Schedule(43_200, 7200)
    spec = scheduled_spec(policy)
    assert spec.trigger.value == "schedule" and str(spec.model) == "digits-cnn"
    assert [str(d) for d in spec.data] == ["caps"] and spec.epochs == 3


@pytest.mark.parametrize(
    ("item", "named"),
    [({"schedule": {"every": "1.5h"}}, "'1.5h'"), ({"schedule": {"at": "2am"}}, "'2am'"),
     ({"schedule": "24h"}, "'24h'"), ({"kinds": []}, "no schedule"),
     ({"kinds": "drifting_nodes"}, "'drifting_nodes'")],
)  # fmt: skip
def test_a_bad_policy_file_is_refused_naming_the_value(
    tmp_path: Path, item: dict[str, object], named: str
) -> None:
    path = tmp_path / "policies.json"
    path.write_text(json.dumps({"policies": [{"model": "m", "data": ["caps"], **item}]}))
    with pytest.raises(ConfigError) as err:
        load_policies(path)
    assert named in err.value.message


def test_a_policy_without_kinds_or_schedule_starts_nothing_and_is_refused() -> None:
    with pytest.raises(ConfigError, match="starts no job"):
        RetrainPolicy("m", ("caps",), kinds=frozenset())
