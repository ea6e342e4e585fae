"""The control loop's schedule slots against a real SQLite database, with a clock the test sets
and a recording starter: a restart neither skips nor doubles a slot."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgeloop.control.schedule_tick import ScheduleTicker, SlotState, get
from edgeloop.pipeline.retrain_policy import RetrainPolicy
from edgeloop.pipeline.retrain_schedule import Schedule
from edgeloop.pipeline.retrain_spec import RetrainSpec
from edgeloop.registry.database import Database, connect

T0 = 1_796_601_600.0  # 2026-12-07T00:00:00Z
POLICY = RetrainPolicy("m", ("caps",), kinds=frozenset(), schedule=Schedule(every_s=3600))


class Db:
    """The control plane's ``read``/``write`` over one database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def read(self, action: str, run: Any) -> Any:
        with self.db.engine.connect() as conn:
            return run(conn)

    def write(self, action: str, run: Any) -> Any:
        with self.db.write() as conn:
            return run(conn)


class Starter:
    """Records the specs it is asked to start; ``crash`` makes the next start die midway."""

    def __init__(self, answer: str = "started") -> None:
        self.specs: list[RetrainSpec] = []
        self.answer = answer
        self.crash = False
        self.jobs: list[tuple[str, float]] = []  # (id, created at) of the jobs it made

    def start(self, spec: RetrainSpec) -> tuple[str | None, str]:
        self.specs.append(spec)
        if self.answer == "409":
            return None, "job j0 runs already (409)"
        job_id = f"j{len(self.specs)}"
        self.jobs.append((job_id, clock.now))
        if self.crash:  # the job was created; the control plane died before the outcome
            raise SystemExit("killed")
        return job_id, f"job {job_id} started"

    def started_since(self, model: str, since: float) -> str | None:
        return next((j for j, at in reversed(self.jobs) if at >= since), None)


class Clock:
    now = T0 + 600.0

    def __call__(self) -> float:
        return self.now


clock = Clock()


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Db]:
    database = connect(f"sqlite:///{tmp_path / 'control.db'}")
    clock.now = T0 + 600.0
    yield Db(database)
    database.engine.dispose()


def _row(db: Db) -> SlotState:
    row = db.read("", lambda c: get(c, "m"))
    assert row is not None
    return row


def test_a_new_schedule_starts_at_its_next_slot_and_each_slot_starts_one_job(db: Db) -> None:
    starter = Starter()
    ticker = ScheduleTicker((POLICY,), starter, clock)
    (first,) = ticker.tick(db)
    assert first.slot == T0 and first.job_id is None and "2026-12-07T01:00:00Z" in first.outcome
    clock.now = T0 + 3599
    assert ticker.tick(db) == [] and starter.specs == []
    clock.now = T0 + 3600
    (ran,) = ticker.tick(db)
    assert (ran.slot, ran.job_id, ran.pending) == (T0 + 3600, "j1", False)
    (spec,) = starter.specs
    assert spec.trigger.value == "schedule" and str(spec.model) == "m"
    clock.now = T0 + 7199
    assert ticker.tick(db) == [] and len(starter.specs) == 1


def test_a_restart_neither_doubles_a_handled_slot_nor_skips_missed_ones(db: Db) -> None:
    starter = Starter()
    ScheduleTicker((POLICY,), starter, clock).tick(db)
    clock.now = T0 + 3600
    ScheduleTicker((POLICY,), starter, clock).tick(db)
    clock.now = T0 + 3700  # restarted within the same slot: nothing
    assert ScheduleTicker((POLICY,), starter, clock).tick(db) == []
    clock.now = T0 + 5 * 3600 + 1  # down through three slots: one job, for the latest
    (late,) = ScheduleTicker((POLICY,), starter, clock).tick(db)
    assert late.slot == T0 + 5 * 3600 and len(starter.specs) == 2


def test_a_restart_between_claim_and_outcome_finds_the_job_instead_of_starting_another(
    db: Db,
) -> None:
    starter = Starter()
    ScheduleTicker((POLICY,), starter, clock).tick(db)
    clock.now = T0 + 3600
    starter.crash = True
    with pytest.raises(SystemExit):
        ScheduleTicker((POLICY,), starter, clock).tick(db)
    assert _row(db).pending
    starter.crash = False
    clock.now = T0 + 3610
    (found,) = ScheduleTicker((POLICY,), starter, clock).tick(db)
    assert (found.job_id, found.pending, len(starter.specs)) == ("j1", False, 1)
    assert "after a restart" in found.outcome


def test_a_claimed_slot_whose_job_was_never_created_is_started_after_a_restart(db: Db) -> None:
    starter = Starter()
    ScheduleTicker((POLICY,), starter, clock).tick(db)
    clock.now = T0 + 3600
    starter.jobs.clear()
    starter.crash = True
    with pytest.raises(SystemExit):
        ScheduleTicker((POLICY,), starter, clock).tick(db)
    starter.jobs.clear()  # the process died before the job record was written
    starter.crash = False
    (ran,) = ScheduleTicker((POLICY,), starter, clock).tick(db)
    assert ran.slot == T0 + 3600 and ran.job_id == "j2" and len(starter.specs) == 2


def test_a_job_running_already_is_the_slots_outcome_and_it_is_not_retried(db: Db) -> None:
    starter = Starter(answer="409")
    ticker = ScheduleTicker((POLICY,), starter, clock)
    ticker.tick(db)
    clock.now = T0 + 3600
    (busy,) = ticker.tick(db)
    assert busy.job_id is None and "409" in busy.outcome and not busy.pending
    clock.now = T0 + 3601
    assert ticker.tick(db) == [] and len(starter.specs) == 1


def test_two_control_planes_on_one_database_start_a_slot_once(db: Db) -> None:
    one, two = Starter(), Starter()
    ScheduleTicker((POLICY,), one, clock).tick(db)
    clock.now = T0 + 3600
    a, b = ScheduleTicker((POLICY,), one, clock), ScheduleTicker((POLICY,), two, clock)
    a.tick(db)
    b.tick(db)
    assert len(one.specs) + len(two.specs) == 1


def test_a_changed_schedule_starts_afresh_without_a_job(db: Db) -> None:
    starter = Starter()
    ScheduleTicker((POLICY,), starter, clock).tick(db)
    daily = RetrainPolicy("m", ("caps",), kinds=frozenset(), schedule=Schedule(at_s=7200))
    clock.now = T0 + 3 * 3600
    (fresh,) = ScheduleTicker((daily,), starter, clock).tick(db)
    assert fresh.schedule == "every 1d at 02:00" and fresh.slot == T0 + 7200
    assert starter.specs == []


def test_policies_without_a_schedule_touch_nothing(db: Db) -> None:
    alerts_only = RetrainPolicy("m", ("caps",))
    assert ScheduleTicker((alerts_only,), Starter(), clock).tick(db) == []
