"""Job records: a long-running job (a retraining run) as the registry database keeps it.

A job is created QUEUED by whoever asks for it (the CLI, the control plane), moved to RUNNING by
the process that runs it, and ends SUCCEEDED, FAILED or CANCELLED with a reason. The allowed
moves are the pairs in :data:`TRANSITIONS`, checked in one place (:func:`check_move`). While a
job is QUEUED or RUNNING it holds its model: a second job for the same model is refused with
:class:`JobRunningError` (HTTP 409) naming the job that holds it.

The value here does no I/O; :mod:`edgeloop.registry.job_store` keeps the rows.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from edgeloop.core.errors import ConfigError, ConflictError


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE = frozenset({JobState.QUEUED, JobState.RUNNING})
TRANSITIONS = frozenset(
    {
        (JobState.QUEUED, JobState.RUNNING),
        (JobState.QUEUED, JobState.FAILED),
        (JobState.QUEUED, JobState.CANCELLED),
        (JobState.RUNNING, JobState.SUCCEEDED),
        (JobState.RUNNING, JobState.FAILED),
        (JobState.RUNNING, JobState.CANCELLED),
    }
)


class JobRunningError(ConflictError):
    """A job for this model is queued or running already; its id is in the answer."""

    def __init__(self, model: str, job_id: str, state: JobState) -> None:
        super().__init__(
            f"model {model!r} has a job {state.value} already: {job_id}; one job runs per model",
            hint=f"wait for it (`edgeloop jobs show {job_id}`) or cancel it "
            f"(`edgeloop jobs cancel {job_id}`)",
        )
        self.job_id = job_id

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "job_id": self.job_id}


def check_move(job_id: str, old: JobState, new: JobState) -> None:
    """Raise ConflictError unless ``old -> new`` is an allowed move."""
    if (old, new) not in TRANSITIONS:
        raise ConflictError(
            f"job {job_id} is {old.value}; it cannot become {new.value}",
            hint="a finished job stays as it ended; start a new one",
        )


@dataclass(frozen=True, slots=True)
class LogLine:
    """One line of a job's log, numbered from 1."""

    seq: int
    at: datetime
    line: str

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "at": self.at.isoformat(), "line": self.line}


@dataclass(frozen=True, slots=True)
class Job:
    """One job record. ``runner`` is what the executor needs to find its process again (a pid
    and its start time for a local process); ``result`` the job's own report when it ended."""

    id: str
    kind: str
    model: str
    state: JobState
    step: str
    progress: float
    spec: Mapping[str, Any]
    created_at: datetime
    reason: str = ""
    result: Mapping[str, Any] | None = None
    cancel_requested: bool = False
    runner: Mapping[str, Any] = field(default_factory=dict)
    started_at: datetime | None = None
    heartbeat_at: datetime | None = None
    finished_at: datetime | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.progress <= 1.0:
            raise ConfigError(f"job progress {self.progress} is outside [0, 1]")

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    def to_dict(self) -> dict[str, Any]:
        def iso(t: datetime | None) -> str | None:
            return None if t is None else t.isoformat()

        return {
            "id": self.id,
            "kind": self.kind,
            "model": self.model,
            "state": self.state.value,
            "step": self.step,
            "progress": self.progress,
            "reason": self.reason,
            "cancel_requested": self.cancel_requested,
            "spec": dict(self.spec),
            "result": None if self.result is None else dict(self.result),
            "runner": dict(self.runner),
            "created_at": iso(self.created_at),
            "started_at": iso(self.started_at),
            "heartbeat_at": iso(self.heartbeat_at),
            "finished_at": iso(self.finished_at),
        }


def to_json(value: Mapping[str, Any] | None) -> str | None:
    """Strict JSON text of a spec / result / runner column (ConfigError when not JSON)."""
    if value is None:
        return None
    try:
        return json.dumps(dict(value), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"a job record field is not JSON: {exc}") from exc
