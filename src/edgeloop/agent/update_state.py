"""The updater's state record: one small JSON file, rewritten durably at every transition.

The allowed transitions are a set of pairs checked in one place (:func:`check_transition`).
A record found on start tells the agent what was in progress when it stopped; see
:func:`edgeloop.agent.updater.Updater.recover` for what it does with each state.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from edgeloop.agent.durable import write_json
from edgeloop.core.errors import ConfigError, EdgeError

_KEEP_EVENTS = 200  # events kept in the record between two reports (a few updates' worth)


class UpdateState(StrEnum):
    IDLE = "IDLE"
    DOWNLOAD = "DOWNLOAD"
    VERIFY = "VERIFY"
    STAGE = "STAGE"
    SELF_TEST = "SELF_TEST"
    ACTIVATE = "ACTIVATE"
    WATCH = "WATCH"
    COMMIT = "COMMIT"
    ROLLBACK = "ROLLBACK"


class Outcome(StrEnum):
    """How the last update ended."""

    COMMITTED = "committed"
    ROLLED_BACK = "rolled_back"
    INTERRUPTED = "interrupted"  # stopped before ACTIVATE; the old model never stopped serving


S = UpdateState
# The happy path, plus ROLLBACK from every state that can fail, plus IDLE from ROLLBACK.
# An update interrupted before ACTIVATE goes back to IDLE on restart (nothing to undo).
TRANSITIONS: frozenset[tuple[UpdateState, UpdateState]] = frozenset(
    {
        (S.IDLE, S.DOWNLOAD),
        (S.DOWNLOAD, S.VERIFY),
        (S.VERIFY, S.STAGE),
        (S.STAGE, S.SELF_TEST),
        (S.SELF_TEST, S.ACTIVATE),
        (S.ACTIVATE, S.WATCH),
        (S.WATCH, S.COMMIT),
        (S.COMMIT, S.IDLE),
        (S.ROLLBACK, S.IDLE),
    }
    | {(s, S.ROLLBACK) for s in (S.DOWNLOAD, S.VERIFY, S.STAGE, S.SELF_TEST, S.ACTIVATE, S.WATCH)}
    | {(s, S.IDLE) for s in (S.DOWNLOAD, S.VERIFY, S.STAGE, S.SELF_TEST)}
)


class TransitionError(EdgeError):
    """A transition outside :data:`TRANSITIONS` was asked for (a bug, never user input)."""


def check_transition(old: UpdateState, new: UpdateState) -> None:
    """Raises TransitionError unless ``old -> new`` is allowed."""
    if (old, new) not in TRANSITIONS:
        allowed = sorted(n.value for o, n in TRANSITIONS if o is old)
        raise TransitionError(
            f"updater transition {old} -> {new} is not allowed; from {old}: {allowed}"
        )


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True, slots=True)
class Event:
    at: str
    state: str
    detail: str

    def to_dict(self) -> dict[str, str]:
        return {"at": self.at, "state": self.state, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class UpdateRecord:
    """What the updater is doing and what it did last.

    ``revision`` is the deployment revision the agent last acted on (committed, rolled back);
    ``target_revision`` the one in progress. ``from_slot`` is the slot that served when the
    update began (ROLLBACK returns to it), ``to_slot`` the slot being staged.
    """

    state: UpdateState = UpdateState.IDLE
    revision: int = 0
    target_revision: int | None = None
    from_slot: str | None = None
    to_slot: str | None = None
    outcome: Outcome | None = None
    error: str | None = None
    failed_revision: int | None = None
    attempts: int = 0  # restarts that interrupted ``attempt_revision`` before ACTIVATE
    attempt_revision: int | None = None
    events: tuple[Event, ...] = field(default_factory=tuple)

    def moved(self, new: UpdateState, detail: str, **changes: Any) -> UpdateRecord:
        """This record in state ``new`` with an event saying why.

        Raises:
            TransitionError: ``state -> new`` is not an allowed transition.
        """
        check_transition(self.state, new)
        events = (*self.events, Event(now_iso(), new.value, detail))[-_KEEP_EVENTS:]
        return replace(self, state=new, events=events, **changes)

    def without_events(self, count: int) -> UpdateRecord:
        """The record after its first ``count`` events were reported."""
        return replace(self, events=self.events[count:])

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "revision": self.revision,
            "target_revision": self.target_revision,
            "from_slot": self.from_slot,
            "to_slot": self.to_slot,
            "outcome": self.outcome.value if self.outcome else None,
            "error": self.error,
            "failed_revision": self.failed_revision,
            "attempts": self.attempts,
            "attempt_revision": self.attempt_revision,
            "events": [e.to_dict() for e in self.events],
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> UpdateRecord:
        return cls(
            state=UpdateState(doc["state"]),
            revision=int(doc["revision"]),
            target_revision=doc.get("target_revision"),
            from_slot=doc.get("from_slot"),
            to_slot=doc.get("to_slot"),
            outcome=Outcome(doc["outcome"]) if doc.get("outcome") else None,
            error=doc.get("error"),
            failed_revision=doc.get("failed_revision"),
            attempts=int(doc.get("attempts", 0)),
            attempt_revision=doc.get("attempt_revision"),
            events=tuple(Event(**e) for e in doc.get("events", [])),
        )


def load_record(path: Path) -> UpdateRecord:
    """The persisted record, or a fresh IDLE one when there is none.

    Raises:
        ConfigError: the file exists but is not a record (it is only ever written atomically,
            so this means someone edited it by hand).
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return UpdateRecord()
    try:
        return UpdateRecord.from_dict(json.loads(raw))
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"the updater state {str(path)!r} is not a valid record: {exc}",
            hint="restore it, or remove it to start from IDLE (the active slot keeps serving)",
        ) from exc


def save_record(path: Path, record: UpdateRecord) -> None:
    """Write the record durably (temp file, fsync, rename, fsync the folder)."""
    write_json(path, record.to_dict())
