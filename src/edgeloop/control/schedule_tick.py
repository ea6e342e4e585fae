"""The control loop's retraining schedules: a due slot of a policy's schedule starts a job with
the trigger ``schedule``, remembered in the database so a restart neither skips nor doubles one.

The table ``control_retrain_schedules`` holds, per model, the schedule's text, the last slot
handled, whether that slot is still ``pending`` (claimed, its outcome not written yet), and the
outcome (the job's id, "runs already" for a 409, or why the request was refused). Each tick,
for each policy with a schedule (the rule is pipeline/retrain_schedule.py's :func:`due`):

- no row, or the schedule changed: the current slot is recorded as handled, without a job; a
  schedule starts from its next slot, as cron does;
- a slot due: it is claimed first, by an update conditional on the last slot (of two control
  planes on one database exactly one claims it), then the job is submitted and the outcome
  written;
- a pending slot (the control plane stopped between the claim and the outcome): a job of the
  model with the trigger ``schedule`` created since the claim is taken as that slot's job; only
  when there is none is the job submitted.

A job already running for the model (409) is that slot's outcome ("being handled"): the slot is
not tried again. A refused request (a data set without labels yet) is logged and recorded; the
next slot tries again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import sqlalchemy as sa

from edgeloop.pipeline.retrain_policy import RetrainPolicy, scheduled_spec
from edgeloop.pipeline.retrain_schedule import Schedule, due
from edgeloop.pipeline.retrain_spec import RetrainSpec

log = logging.getLogger("edgeloop.control.jobs")

_metadata = sa.MetaData()
schedules = sa.Table(
    "control_retrain_schedules",
    _metadata,
    sa.Column("model", sa.String(128), primary_key=True),
    sa.Column("schedule", sa.String(64), nullable=False),
    sa.Column("slot", sa.BigInteger, nullable=False),
    sa.Column("pending", sa.Boolean, nullable=False),
    sa.Column("claimed_at", sa.Float, nullable=False),
    sa.Column("job_id", sa.String(32), nullable=True),
    sa.Column("outcome", sa.Text, nullable=False),
)


class Database(Protocol):
    """What the ticker needs of :class:`~edgeloop.control.plane.ControlPlane`."""

    def read(self, action: str, run: Any) -> Any: ...

    def write(self, action: str, run: Any) -> Any: ...


class Starter(Protocol):
    """Submits jobs (:class:`~edgeloop.control.jobs_api.PolicyTrigger`)."""

    def start(self, spec: RetrainSpec) -> tuple[str | None, str]:
        """Submit ``spec``: the new job's id (None when none was created) and the outcome."""
        ...

    def started_since(self, model: str, since: float) -> str | None:
        """The id of a job of ``model`` with the trigger ``schedule`` created at or after
        ``since`` (Unix seconds), if any."""
        ...


@dataclass(frozen=True, slots=True)
class SlotState:
    """One row of the table: the last slot handled for ``model`` and what came of it."""

    model: str
    schedule: str
    slot: int
    pending: bool
    claimed_at: float
    job_id: str | None
    outcome: str


class ScheduleTicker:
    """Starts the jobs of due slots (see the module docstring); ``clock``: Unix seconds."""

    def __init__(
        self,
        policies: tuple[RetrainPolicy, ...],
        starter: Starter,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.policies = tuple(p for p in policies if p.schedule is not None)
        self.starter = starter
        self.clock = clock
        self.ready = False  # the table exists

    def tick(self, db: Database) -> list[SlotState]:
        """One look at every scheduled policy; the rows written by this tick."""
        if not self.policies:
            return []
        if not self.ready:
            db.write("creating the retraining schedule table", _metadata.create_all)
            self.ready = True
        written = []
        for policy in self.policies:
            assert policy.schedule is not None
            state = self._look(db, policy, policy.schedule, self.clock())
            if state is not None:
                written.append(state)
        return written

    def _look(
        self, db: Database, policy: RetrainPolicy, schedule: Schedule, now: float
    ) -> SlotState | None:
        model = policy.model
        row: SlotState | None = db.read(f"reading the schedule of {model}", lambda c: get(c, model))
        if row is None or row.schedule != schedule.text:
            first = f"{schedule.text} starts; its first slot is {_utc(schedule.next_after(now))}"
            start = SlotState(model, schedule.text, schedule.latest(now), False, now, None, first)
            db.write(f"starting the schedule of {model}", lambda c: put(c, start))
            log.info("retrain schedule for %s: %s", model, start.outcome)
            return start
        if row.pending:  # stopped between claim and outcome: was the job created?
            if (job_id := self.starter.started_since(model, row.claimed_at)) is not None:
                found = f"job {job_id} started (found after a restart)"
                return self._finish(db, row, job_id, found)
            claimed = row
        else:
            slot = due(schedule, row.slot, now)
            if slot is None:
                return None
            claimed = SlotState(model, row.schedule, slot, True, now, None, "claimed")
            if not db.write(f"claiming a slot of {model}", lambda c: claim(c, row.slot, claimed)):
                return None  # another control plane on this database claimed it
        job_id, outcome = self.starter.start(scheduled_spec(policy))
        return self._finish(db, claimed, job_id, outcome)

    def _finish(self, db: Database, row: SlotState, job_id: str | None, outcome: str) -> SlotState:
        done = SlotState(row.model, row.schedule, row.slot, False, row.claimed_at, job_id, outcome)
        db.write(f"recording the schedule of {row.model}", lambda c: put(c, done))
        log.info("retrain schedule for %s, slot %s: %s", row.model, _utc(row.slot), outcome)
        return done


def get(conn: sa.Connection, model: str) -> SlotState | None:
    found = conn.execute(sa.select(schedules).where(schedules.c.model == model)).first()
    if found is None:
        return None
    return SlotState(str(found.model), str(found.schedule), int(found.slot), bool(found.pending),
                     float(found.claimed_at), found.job_id, str(found.outcome))  # fmt: skip


def put(conn: sa.Connection, state: SlotState) -> None:
    """Write ``state`` as its model's row (replacing any)."""
    conn.execute(schedules.delete().where(schedules.c.model == state.model))
    conn.execute(schedules.insert().values(**_values(state)))


def claim(conn: sa.Connection, last: int, state: SlotState) -> bool:
    """Move the row from the handled slot ``last`` to the pending ``state``; False when the
    row was no longer at ``last`` (claimed by someone else)."""
    where = (schedules.c.model == state.model) & (schedules.c.slot == last)
    done = conn.execute(schedules.update().where(where & ~schedules.c.pending)
                        .values(**_values(state)))  # fmt: skip
    return bool(done.rowcount == 1)


def _utc(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _values(state: SlotState) -> dict[str, Any]:
    return {
        "model": state.model,
        "schedule": state.schedule,
        "slot": state.slot,
        "pending": state.pending,
        "claimed_at": state.claimed_at,
        "job_id": state.job_id,
        "outcome": state.outcome[:2000],
    }
