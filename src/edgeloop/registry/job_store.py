"""``JobStore``: job records and their logs in the registry's SQL database (SQLite, PostgreSQL).

One job per model at a time holds because of the database, not because of a check-then-insert:
a job that is queued or running keeps its model name in ``active_model``, a UNIQUE column (NULLs
are distinct in SQLite and PostgreSQL alike), so of two concurrent creators exactly one insert
commits; the other is answered with the holder's id. Ending a job clears the column in the same
transaction that writes its end state. Log lines are numbered per job inside the writing
transaction.
"""

from __future__ import annotations

import builtins
import json
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from edgeloop.core.errors import ConflictError, NotFoundError, StoreError
from edgeloop.registry.database import connect
from edgeloop.registry.jobs import ACTIVE, Job, JobRunningError, JobState, LogLine, check_move
from edgeloop.registry.jobs import to_json as _json
from edgeloop.registry.store import utc_now

T = TypeVar("T")
MAX_LINE = 2000  # characters kept of one log line

_metadata = sa.MetaData()
jobs = sa.Table(
    "registry_jobs",
    _metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("model", sa.String(128), nullable=False, index=True),
    sa.Column("active_model", sa.String(128), nullable=True, unique=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("step", sa.String(64), nullable=False),
    sa.Column("progress", sa.Float, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("result", sa.Text, nullable=True),
    sa.Column("cancel_requested", sa.Boolean, nullable=False),
    sa.Column("runner", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
)
job_log = sa.Table(
    "registry_job_log",
    _metadata,
    sa.Column("job_id", sa.String(32), sa.ForeignKey("registry_jobs.id"), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("line", sa.Text, nullable=False),
)


class JobStore:
    """Create, move, log and read job records.

    Raises (constructor): ConfigError / MissingDependencyError for the URL, StoreError when the
    database cannot be reached.
    """

    def __init__(self, url: str) -> None:
        self._db = connect(url)
        self.url = self._db.display_url
        self._guarded("opening the job store", self._create_tables)

    def _create_tables(self) -> None:
        try:
            self._create_all()
        except sa_exc.DBAPIError:  # another process created them between check and CREATE
            self._create_all()

    def _create_all(self) -> None:
        # In a write transaction: on SQLite it takes the write lock first and waits for other
        # writers (busy timeout); a read that upgrades to a write fails at once instead
        # ("database is locked", seen while agents' telemetry was being committed).
        with self._db.write() as conn:
            _metadata.create_all(conn)

    def close(self) -> None:
        self._db.engine.dispose()

    def create(
        self, kind: str, model: str, spec: Mapping[str, Any], *, job_id: str | None = None
    ) -> Job:
        """A new QUEUED job holding ``model`` (with id ``job_id``, or a new one).

        Raises:
            JobRunningError: another job holds ``model`` (its id is in the error).
            StoreError: the database failed.
        """
        job = Job(
            job_id or uuid.uuid4().hex, kind, model, JobState.QUEUED, "queued", 0.0, spec, utc_now()
        )
        row = {**_row(job), "active_model": model}
        try:
            with self._db.write() as conn:
                conn.execute(jobs.insert().values(**row))
        except sa_exc.IntegrityError as exc:
            holder = self.active(model)
            if holder is None:  # it ended between our insert and this read: a lost race
                raise self._db.translate(exc, f"creating a job for {model!r}", "job") from exc
            raise JobRunningError(model, holder.id, holder.state) from exc
        except sa_exc.SQLAlchemyError as exc:
            if holder := self.active(model):
                raise JobRunningError(model, holder.id, holder.state) from exc
            raise self._db.translate(exc, f"creating a job for {model!r}", "job") from exc
        return job

    def get(self, job_id: str) -> Job:
        """Raises NotFoundError naming the id."""

        def run() -> Job:
            with self._db.engine.connect() as conn:
                row = conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).first()
            if row is None:
                raise NotFoundError(
                    f"no job with id {job_id!r}", hint="see `edgeloop jobs list` for the ids"
                )
            return _value(row)

        return self._guarded(f"reading job {job_id!r}", run)

    def active(self, model: str) -> Job | None:
        """The queued or running job holding ``model``, if any."""

        def run() -> Job | None:
            with self._db.engine.connect() as conn:
                row = conn.execute(sa.select(jobs).where(jobs.c.active_model == model)).first()
            return None if row is None else _value(row)

        return self._guarded(f"reading the active job of {model!r}", run)

    def list(self, model: str | None = None, *, active: bool = False) -> builtins.list[Job]:
        """Jobs (of ``model``; only queued/running ones with ``active``), newest first."""
        query = sa.select(jobs).order_by(jobs.c.created_at.desc(), jobs.c.id)
        if model is not None:
            query = query.where(jobs.c.model == model)
        if active:
            query = query.where(jobs.c.state.in_([s.value for s in ACTIVE]))

        def run() -> builtins.list[Job]:
            with self._db.engine.connect() as conn:
                return [_value(r) for r in conn.execute(query)]

        return self._guarded("listing jobs", run)

    def start(self, job_id: str, runner: Mapping[str, Any]) -> Job:
        """QUEUED -> RUNNING, recording the ``runner`` that runs it (ConflictError otherwise)."""
        now = utc_now()
        return self._move(
            job_id,
            JobState.RUNNING,
            {"runner": _json(runner), "started_at": now, "heartbeat_at": now, "step": "started"},
        )

    def set_runner(self, job_id: str, runner: Mapping[str, Any]) -> None:
        """Record where the job runs (the executor, before the process itself starts)."""
        self._update(job_id, {"runner": _json(runner)})

    def progress(self, job_id: str, step: str, progress: float) -> Job:
        """Record the current step and overall progress (and a heartbeat); the job as stored."""
        self._update(
            job_id,
            {
                "step": step[:64],
                "progress": min(1.0, max(0.0, progress)),
                "heartbeat_at": utc_now(),
            },
        )
        return self.get(job_id)

    def heartbeat(self, job_id: str) -> bool:
        """Record that the job's process is alive; return whether a cancel was requested."""
        self._update(job_id, {"heartbeat_at": utc_now()})
        return self.get(job_id).cancel_requested

    def request_cancel(self, job_id: str) -> Job:
        """Ask a queued or running job to stop. Raises ConflictError for an ended one."""
        job = self.get(job_id)
        if not job.active:
            raise ConflictError(
                f"job {job_id} is {job.state.value} already; there is nothing to cancel",
                hint="start a new job instead",
            )
        self._update(job_id, {"cancel_requested": True})
        return self.get(job_id)

    def finish(
        self,
        job_id: str,
        state: JobState,
        reason: str,
        result: Mapping[str, Any] | None = None,
    ) -> Job:
        """End the job (``state`` one of the end states) with ``reason``; releases its model.

        Raises:
            ConflictError: the job ended already (it keeps its first end).
        """
        values: dict[str, Any] = {"reason": reason, "finished_at": utc_now(), "active_model": None}
        if result is not None:
            values["result"] = _json(result)
        if state is JobState.SUCCEEDED:
            values["progress"] = 1.0
        return self._move(job_id, state, values)

    def log(self, job_id: str, line: str) -> LogLine:
        """Append ``line`` (cut to :data:`MAX_LINE` characters) to the job's log."""

        def run() -> LogLine:
            with self._db.write() as conn:
                last = conn.execute(
                    sa.select(sa.func.max(job_log.c.seq)).where(job_log.c.job_id == job_id)
                ).scalar_one_or_none()
                entry = LogLine(int(last or 0) + 1, utc_now(), line[:MAX_LINE])
                conn.execute(
                    job_log.insert().values(
                        job_id=job_id, seq=entry.seq, at=entry.at, line=entry.line
                    )
                )
            return entry

        return self._guarded(f"logging to job {job_id!r}", run)

    def logs(self, job_id: str, after: int = 0) -> builtins.list[LogLine]:
        """The job's log lines numbered above ``after``, in order."""
        query = (
            sa.select(job_log)
            .where(job_log.c.job_id == job_id, job_log.c.seq > after)
            .order_by(job_log.c.seq)
        )

        def run() -> builtins.list[LogLine]:
            with self._db.engine.connect() as conn:
                return [LogLine(int(r.seq), _utc(r.at), str(r.line)) for r in conn.execute(query)]

        return self._guarded(f"reading the log of job {job_id!r}", run)

    def _move(self, job_id: str, new: JobState, values: dict[str, Any]) -> Job:
        def run() -> None:
            with self._db.write() as conn:
                row = conn.execute(sa.select(jobs.c.state).where(jobs.c.id == job_id)).first()
                if row is None:
                    raise NotFoundError(f"no job with id {job_id!r}")
                check_move(job_id, JobState(row.state), new)
                conn.execute(
                    jobs.update().where(jobs.c.id == job_id).values(state=new.value, **values)
                )

        self._guarded(f"moving job {job_id!r} to {new.value}", run)
        return self.get(job_id)

    def _update(self, job_id: str, values: dict[str, Any]) -> None:
        def run() -> None:
            with self._db.write() as conn:
                done = conn.execute(jobs.update().where(jobs.c.id == job_id).values(**values))
            if done.rowcount == 0:
                raise NotFoundError(f"no job with id {job_id!r}")

        self._guarded(f"updating job {job_id!r}", run)

    def _guarded(self, action: str, run: Callable[[], T]) -> T:
        try:
            return run()
        except sa_exc.SQLAlchemyError as exc:
            raise self._db.translate(exc, action, "job") from exc


def _row(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "kind": job.kind,
        "model": job.model,
        "state": job.state.value,
        "step": job.step,
        "progress": job.progress,
        "reason": job.reason,
        "spec": _json(job.spec),
        "result": _json(job.result),
        "cancel_requested": job.cancel_requested,
        "runner": _json(job.runner),
        "created_at": job.created_at,
    }


def _utc(t: datetime | None) -> datetime:
    if t is None:
        raise StoreError("a job row lacks a time it must have")
    # SQLite hands back naive datetimes (stored as UTC); PostgreSQL aware ones.
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def _maybe(t: datetime | None) -> datetime | None:
    return None if t is None else _utc(t)


def _value(row: sa.Row[Any]) -> Job:
    return Job(
        id=str(row.id),
        kind=str(row.kind),
        model=str(row.model),
        state=JobState(row.state),
        step=str(row.step),
        progress=float(row.progress),
        spec=json.loads(row.spec),
        created_at=_utc(row.created_at),
        reason=str(row.reason),
        result=None if row.result is None else json.loads(row.result),
        cancel_requested=bool(row.cancel_requested),
        runner=json.loads(row.runner),
        started_at=_maybe(row.started_at),
        heartbeat_at=_maybe(row.heartbeat_at),
        finished_at=_maybe(row.finished_at),
    )
