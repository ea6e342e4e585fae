"""The updater's record and its endings: what :class:`~edgeloop.agent.updater.Updater` builds on.

:class:`UpdateRecovery` owns the record (:mod:`edgeloop.agent.update_state`) and the slots: every
transition is written durably (:meth:`UpdateRecovery._move`), the pause hook stops at a state
boundary, and it finishes an update either way (commit, or rollback to the slot that served
before). On start it resumes or rolls back from the state the record was left in
(:meth:`UpdateRecovery.recover`) and picks the slot to serve (:meth:`UpdateRecovery.startup_check`).
The steps of one update (DOWNLOAD ... COMMIT) are in :mod:`edgeloop.agent.updater`.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import replace
from typing import Protocol

from edgeloop.agent.activator import serving_config
from edgeloop.agent.deployment import parse_deployment
from edgeloop.agent.health import HealthFigures, HealthRecorder
from edgeloop.agent.home import AgentHome
from edgeloop.agent.self_test import SelfTestResult, run_self_test
from edgeloop.agent.slots import SlotModel, Slots
from edgeloop.agent.update_checks import node_of
from edgeloop.agent.update_state import (
    Outcome,
    UpdateState,
    load_record,
    now_iso,
    save_record,
)
from edgeloop.core.errors import ConfigError, UntrustedArtifactError
from edgeloop.serving.config import ServerConfig

# The updater's logger whichever of its modules writes: log configuration names this one.
log = logging.getLogger("edgeloop.agent.updater")
S = UpdateState
PAUSE_ENV = "EDGELOOP_AGENT_PAUSE_AT"
MAX_ATTEMPTS = 3  # restarts before ACTIVATE after which a revision counts as failed
PRE_ACTIVATE = (S.DOWNLOAD, S.VERIFY, S.STAGE, S.SELF_TEST)


class Activator(Protocol):
    """What serves the active slot (the agent's inference server)."""

    async def show(self, model: SlotModel | None) -> None:
        """Serve ``model`` (hot swap, no request dropped); None: serve nothing.

        Raises:
            EdgeError: the server could not load it (the old model keeps serving).
        """
        ...


class UpdateRecovery:
    """The record, the slots, recovery on start and the endings of an update (commit, rollback)."""

    def __init__(self, home: AgentHome, health: HealthRecorder | None = None) -> None:
        self.home = home
        self.slots = Slots(home.slots)
        self.health = health
        self.record = load_record(home.update_state)
        self.self_test: SelfTestResult | None = None
        self.activator: Activator | None = None
        self.active_since: str | None = None
        self.last_figures: HealthFigures | None = None
        self._pause_at = os.environ.get(PAUSE_ENV)
        self._busy = asyncio.Lock()  # one update at a time: a deployment or a node-local one

    # -- the record -----------------------------------------------------------------------

    def _move(self, new: UpdateState, detail: str, **changes: object) -> None:
        self.record = self.record.moved(new, detail, **changes)
        save_record(self.home.update_state, self.record)
        log.info("updater %s: %s", new.value, detail)

    async def _boundary(self, state: UpdateState) -> None:
        if self._pause_at == state.value:
            self.home.pause_marker(state.value).write_text(str(os.getpid()))
            await asyncio.sleep(3600)

    def acknowledge(self, reported: tuple[object, ...]) -> None:
        """Drop events that were reported (they are the record's oldest)."""
        count = sum(1 for e in self.record.events[: len(reported)] if e in reported)
        if count:
            self.record = self.record.without_events(count)
            save_record(self.home.update_state, self.record)

    def wants(self, revision: int) -> bool:
        """Whether ``revision`` is new to this node (not acted on, not given up on)."""
        return self.record.state is S.IDLE and revision > self.record.revision

    # -- start ----------------------------------------------------------------------------

    def recover(self) -> None:
        """Resume or roll back from the state the record was left in (before serving)."""
        state = self.record.state
        if state is S.IDLE:
            return
        if state in PRE_ACTIVATE:
            attempts = self.record.attempts
            detail = (
                f"interrupted in {state.value} by a restart; slot "
                f"{self.record.from_slot or '(none)'} kept serving"
            )
            if attempts + 1 >= MAX_ATTEMPTS:
                self._move(S.IDLE, f"{detail}; revision {self.record.target_revision} given up "
                           f"after {MAX_ATTEMPTS} attempts", outcome=Outcome.ROLLED_BACK,
                           revision=self.record.target_revision or self.record.revision,
                           failed_revision=self.record.target_revision, target_revision=None,
                           error=f"interrupted {MAX_ATTEMPTS} times")  # fmt: skip
            else:
                self._move(S.IDLE, f"{detail}; the update will be retried",
                           outcome=Outcome.INTERRUPTED, target_revision=None,
                           attempts=attempts + 1)  # fmt: skip
            return
        if state is S.COMMIT:
            self._finish_commit()
            return
        if state in (S.ACTIVATE, S.WATCH):
            self._move(S.ROLLBACK, f"restarted in {state.value}: the new model was not committed",
                       error=f"restarted in {state.value}")  # fmt: skip
        self._restore_pointer()
        self._finish_rollback()

    def startup_check(self) -> SlotModel | None:
        """The slot to serve: the active one if intact and passing its self-test, else the other.

        Records the self-test result; switches the pointer when it had to fall back.
        """
        active = self.slots.read(self.slots.active_name())
        if active is None:
            return None
        result = self._check(active)
        if result.passed:
            self.self_test = result
            return active
        other = self.slots.read(self.slots.other(active.slot))
        if other is not None:
            fallback = self._check(other)
            if fallback.passed:
                log.error("active slot %s failed its start check (%s); serving slot %s",
                          active.slot, result.detail, other.slot)  # fmt: skip
                self.slots.activate(other.slot)
                self.self_test = fallback
                return other
        self.self_test = result
        return active  # nothing better: serve what there is, and say it failed

    def _check(self, model: SlotModel) -> SelfTestResult:
        if not self.slots.intact(model):
            return SelfTestResult(False, None, f"slot {model.slot}: file hash changed", now_iso())
        try:
            spec = parse_deployment(model.document, node_of(model.document)).model
        except UntrustedArtifactError as exc:
            return SelfTestResult(False, None, exc.message, now_iso())
        if spec is None:
            return SelfTestResult(False, None, f"slot {model.slot}: its document names no model",
                                  now_iso())  # fmt: skip
        try:
            engine = serving_config(ServerConfig(), model.document)[0].engine
        except ConfigError as exc:
            return SelfTestResult(False, None, exc.message, now_iso())
        return run_self_test(model.file, spec.self_test, engine)

    def _finish_commit(self) -> None:
        self._move(S.IDLE, f"revision {self.record.target_revision} committed in slot "
                   f"{self.record.to_slot}", outcome=Outcome.COMMITTED,
                   revision=self.record.target_revision or self.record.revision,
                   target_revision=None)  # fmt: skip

    async def _rollback(self, reason: str, *, local: bool = False) -> Outcome:
        self._move(S.ROLLBACK, reason, error=reason)
        await self._boundary(S.ROLLBACK)
        switched = self._restore_pointer()
        if switched and self.activator is not None:
            await self.activator.show(self.slots.read(self.slots.active_name()))
            self.active_since = now_iso()
        if local:  # the revision acted on stays; no deployment revision failed
            back = self.record.from_slot or "(none)"
            self._move(S.IDLE, f"node-local version rolled back to slot {back}",
                       outcome=Outcome.ROLLED_BACK)  # fmt: skip
        else:
            self._finish_rollback()
        return Outcome.ROLLED_BACK

    def _restore_pointer(self) -> bool:
        """Point back at the slot that served before the update; whether it moved."""
        before = self.record.from_slot
        if self.slots.active_name() == before:
            return False
        if before is None:
            self.slots.deactivate()
        else:
            self.slots.activate(before)
        return True

    def _finish_rollback(self) -> None:
        target = self.record.target_revision
        self._move(S.IDLE, f"rolled back to slot {self.record.from_slot or '(none)'}",
                   outcome=Outcome.ROLLED_BACK, revision=max(target or 0, self.record.revision),
                   failed_revision=target, target_revision=None)  # fmt: skip

    def reset_record(self) -> None:
        """Forget the events (tests and tools); the state is kept."""
        self.record = replace(self.record, events=())
        save_record(self.home.update_state, self.record)
