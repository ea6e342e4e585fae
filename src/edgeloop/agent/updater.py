"""The updater: an explicit state machine that never leaves the node without a model.

    IDLE -> DOWNLOAD -> VERIFY -> STAGE -> SELF_TEST -> ACTIVATE -> WATCH -> COMMIT -> IDLE
                 \\________\\________\\________\\____________\\__________\\-> ROLLBACK -> IDLE

- DOWNLOAD: the artifact's bytes into a part file, resumable, capped at the signed length, with
  a deadline (:class:`~edgeloop.agent.fetcher.HttpxFetcher`).
- VERIFY: python-tuf's Updater checks length and hashes against the signed targets.
- STAGE: copy into the inactive slot (the active one is never written).
- SELF_TEST: load in the runtime, run the document's sample inputs, compare with its outputs.
- ACTIVATE: one atomic pointer switch, then the server hot-swaps to the new slot.
- WATCH: the server's own figures since ACTIVATE against the document's guard.
- COMMIT, or ROLLBACK: the pointer back to the slot that served before, the server swapped back.

The record (:mod:`edgeloop.agent.update_state`) is written durably on every transition. On start
(:meth:`Updater.recover`): an update stopped before ACTIVATE is dropped (the old slot never
stopped serving) and retried, its download continuing; one stopped in ACTIVATE or WATCH is
rolled back (an uncommitted model that saw a crash is not trusted, as Mender does with an
uncommitted root file system); COMMIT and ROLLBACK are finished.

Test hook: ``EDGELOOP_AGENT_PAUSE_AT=STATE`` writes ``HOME/agent/paused-at-STATE`` once the record
says STATE, then sleeps, so a test can kill the process exactly there.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from tuf.api.metadata import TargetFile

from edgeloop.agent.activator import serving_config
from edgeloop.agent.deployment import Deployment, Guard, ModelSpec, parse_deployment
from edgeloop.agent.health import HealthFigures, HealthRecorder
from edgeloop.agent.home import AgentHome
from edgeloop.agent.self_test import SelfTestResult, run_self_test
from edgeloop.agent.slots import SlotModel, Slots
from edgeloop.agent.tuf_client import TufSession
from edgeloop.agent.update_state import (
    Outcome,
    UpdateState,
    load_record,
    now_iso,
    save_record,
)
from edgeloop.core.errors import ConfigError, EdgeError, TransportError, UntrustedArtifactError
from edgeloop.serving.config import ServerConfig

log = logging.getLogger(__name__)
S = UpdateState
PAUSE_ENV = "EDGELOOP_AGENT_PAUSE_AT"
MAX_ATTEMPTS = 3  # restarts before ACTIVATE after which a revision counts as failed
_PRE_ACTIVATE = (S.DOWNLOAD, S.VERIFY, S.STAGE, S.SELF_TEST)


class Activator(Protocol):
    """What serves the active slot (the agent's inference server)."""

    async def show(self, model: SlotModel | None) -> None:
        """Serve ``model`` (hot swap, no request dropped); None: serve nothing.

        Raises:
            EdgeError: the server could not load it (the old model keeps serving).
        """
        ...


class UpdateFailedError(EdgeError):
    """An update step failed; the message says which and why (the updater rolls back)."""


class Updater:
    """Runs one deployment at a time through the states; owns the record and the slots."""

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
        if state in _PRE_ACTIVATE:
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
            spec = parse_deployment(model.document, _node_of(model.document)).model
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

    # -- one update -----------------------------------------------------------------------

    async def run(self, deployment: Deployment, document: bytes, tuf: TufSession) -> Outcome:
        """Take the node to ``deployment``; the outcome (committed or rolled back).

        Transport failures before ACTIVATE end the attempt as INTERRUPTED (retried later, the
        download continuing); everything else that fails rolls back.
        """
        async with self._busy:  # a node-local install in progress ends first
            return await self._run(deployment, document, tuf)

    async def _run(self, deployment: Deployment, document: bytes, tuf: TufSession) -> Outcome:
        spec = deployment.model
        from_slot = self.slots.active_name()
        what = f"{spec.target} ({spec.length} B)" if spec else "no model"
        again = self.record.attempt_revision == deployment.revision
        self._move(S.DOWNLOAD, f"revision {deployment.revision}: {what}",
                   target_revision=deployment.revision, from_slot=from_slot,
                   to_slot=self.slots.other(from_slot), outcome=None, error=None,
                   attempts=self.record.attempts if again else 0,
                   attempt_revision=deployment.revision)  # fmt: skip
        try:
            await self._steps(deployment, document, tuf)
        except TransportError as exc:
            if self.record.state not in _PRE_ACTIVATE:
                return await self._rollback(exc.message)
            self._move(S.IDLE, f"stopped: {exc.message}; retried on a later pass",
                       outcome=Outcome.INTERRUPTED, target_revision=None,
                       error=exc.message)  # fmt: skip
            return Outcome.INTERRUPTED
        except EdgeError as exc:  # UpdateFailedError included
            return await self._rollback(exc.message)
        except Exception as exc:  # a full disk, a library's own error: the update is over
            log.exception("update of revision %d failed", deployment.revision)
            return await self._rollback(f"{type(exc).__name__}: {exc}")
        self._finish_commit()
        return Outcome.COMMITTED

    async def _steps(self, deployment: Deployment, document: bytes, tuf: TufSession) -> None:
        spec = deployment.model
        await self._boundary(S.DOWNLOAD)
        # a value the server would refuse fails here; the engine it names is the one checked
        engine = serving_config(ServerConfig(), document)[0].engine
        if spec is None:
            await self._serve_nothing()
            return
        info = await asyncio.to_thread(tuf.matching, spec)
        # The drift monitor's reference profile: a second target of the version, fetched and
        # verified through the same TUF session; a bad one fails the update like a bad model.
        # Both are checked against the signed targets before any byte is fetched.
        wanted = profile_target(spec.raw)
        profile_info = None
        if wanted is not None:
            profile_info = await asyncio.to_thread(_matching_profile, tuf, wanted)
        held = await asyncio.to_thread(tuf.download, info)
        if held != spec.length:
            tuf.fetcher.discard_parts()
            raise UntrustedArtifactError(
                f"{spec.target}: the server sent {held} of the signed {spec.length} bytes"
            )
        if wanted is not None and profile_info is not None:
            got = await asyncio.to_thread(tuf.download, profile_info)
            if got != wanted.length:
                tuf.fetcher.discard_parts()
                raise UntrustedArtifactError(
                    f"{wanted.target}: the server sent {got} of the signed {wanted.length} bytes"
                )
            held += got
        self._move(S.VERIFY, f"{held} B downloaded; verifying against the signed targets")
        await self._boundary(S.VERIFY)
        path = await asyncio.to_thread(tuf.verify, info)
        profile = None
        try:
            if profile_info is not None:
                profile = await asyncio.to_thread(tuf.verify, profile_info)
            await self._install(deployment, document, path, engine, profile, "verified by TUF")
        finally:
            path.unlink(missing_ok=True)
            if profile is not None:
                profile.unlink(missing_ok=True)

    async def _install(
        self,
        deployment: Deployment,
        document: bytes,
        path: Path,
        engine: str | None,
        profile: Path | None,
        how: str,
    ) -> None:
        """STAGE -> SELF_TEST -> ACTIVATE -> WATCH -> COMMIT of a checked file (raises on a
        failure; the caller rolls back)."""
        spec = deployment.model
        assert spec is not None  # the callers stage a model
        to_slot = self.record.to_slot or "a"
        self._move(S.STAGE, f"length and sha256 {how}; staging into slot {to_slot}")
        await self._boundary(S.STAGE)
        model = await asyncio.to_thread(
            self.slots.stage, to_slot, path, document, deployment, profile
        )
        if not self.slots.intact(model):
            raise UpdateFailedError(
                f"slot {to_slot}: the staged copy does not hash to {spec.sha256}"
            )
        self._move(S.SELF_TEST, f"staged in slot {to_slot}; loading and self-testing")
        await self._boundary(S.SELF_TEST)
        result = await asyncio.to_thread(run_self_test, model.file, spec.self_test, engine)
        if not result.passed:
            self.self_test = result
            raise UpdateFailedError(f"self-test failed: {result.detail}")
        self._move(S.ACTIVATE, f"self-test passed ({result.detail}, max |diff| "
                   f"{result.max_abs_diff}); switching to slot {to_slot}")  # fmt: skip
        await self._boundary(S.ACTIVATE)
        self.slots.activate(to_slot)
        if self.activator is not None:
            await self.activator.show(model)
        self.self_test = result
        self.active_since = now_iso()
        since = time.monotonic()
        self._move(S.WATCH, f"slot {to_slot} serving; watching {deployment.watch_s:g} s")
        await self._boundary(S.WATCH)
        await asyncio.sleep(deployment.watch_s)
        if self.health is not None:
            figures = self.health.figures(since)
            self.last_figures = figures
            breach = guard_breach(figures, deployment.guard)
            if breach:
                raise UpdateFailedError(f"health window breached: {breach}")
        self._move(S.COMMIT, "health window passed; committing")
        await self._boundary(S.COMMIT)

    async def run_local(
        self, deployment: Deployment, document: bytes, file: Path, profile: Path | None = None
    ) -> Outcome:
        """Install a node-local version (``file``: the training worker's ONNX, ``document``:
        the active slot's document with this model entry, agent/train_worker.py) through the
        same states as a downloaded one: DOWNLOAD and VERIFY only record that the file is
        local and its sha256; then STAGE -> SELF_TEST -> ACTIVATE -> WATCH -> COMMIT, or
        ROLLBACK to the slot that served. The deployment revision acted on is not changed (the
        node still follows its desired state: a newer revision replaces this version) and a
        rollback here never marks that revision failed.

        Raises:
            ConfigError: another update is in progress (the record is not IDLE).
        """
        spec = deployment.model
        if self._busy.locked() or self.record.state is not S.IDLE or spec is None:
            raise ConfigError(
                f"the updater is in {self.record.state.value}; a node-local version is installed "
                "only while it is IDLE",
                hint="wait for the running update to end, then train again",
            )
        async with self._busy:
            return await self._run_local(deployment, document, (file, profile), spec)

    async def _run_local(
        self,
        deployment: Deployment,
        document: bytes,
        files: tuple[Path, Path | None],
        spec: ModelSpec,
    ) -> Outcome:
        from_slot = self.slots.active_name()
        lineage = spec.raw.get("lineage", spec.name)
        self._move(S.DOWNLOAD, f"node-local version {lineage}: trained here, nothing to download",
                   target_revision=None, from_slot=from_slot, to_slot=self.slots.other(from_slot),
                   outcome=None, error=None)  # fmt: skip
        try:
            self._move(S.VERIFY, f"{spec.length} B sha256 {spec.sha256[:12]} (the training "
                       "worker's output, checked against its parity test there)")  # fmt: skip
            engine = serving_config(ServerConfig(), document)[0].engine
            model, profile = files
            await self._install(deployment, document, model, engine, profile, "of the local file")
        except EdgeError as exc:
            return await self._rollback(exc.message, local=True)
        except Exception as exc:  # a full disk, a library's own error: the install is over
            log.exception("install of node-local version %s failed", lineage)
            return await self._rollback(f"{type(exc).__name__}: {exc}", local=True)
        self._move(S.IDLE, f"node-local version {lineage} committed in slot "
                   f"{self.record.to_slot}", outcome=Outcome.COMMITTED)  # fmt: skip
        return Outcome.COMMITTED

    async def _serve_nothing(self) -> None:
        """The same states, for a deployment naming no model: only ACTIVATE does anything."""
        for state in (S.VERIFY, S.STAGE, S.SELF_TEST):
            self._move(state, "the deployment names no model: nothing to do")
            await self._boundary(state)
        self._move(S.ACTIVATE, "the deployment names no model: stop serving")
        await self._boundary(S.ACTIVATE)
        self.slots.deactivate()
        if self.activator is not None:
            await self.activator.show(None)
        self.self_test = None
        self._move(S.WATCH, "no model: nothing to watch")
        await self._boundary(S.WATCH)
        self._move(S.COMMIT, "no model served, as asked")
        await self._boundary(S.COMMIT)

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


@dataclass(frozen=True, slots=True)
class ProfileTarget:
    """The reference profile a deployment entry names: its signed target, sha256, length."""

    target: str
    sha256: str
    length: int


def profile_target(entry: Mapping[str, Any]) -> ProfileTarget | None:
    """The ``profile`` of a model entry (None when it names none).

    Raises:
        UntrustedArtifactError: the entry's ``profile`` is not ``{target, sha256, length}``.
    """
    raw = entry.get("profile")
    if raw is None:
        return None
    target = raw.get("target") if isinstance(raw, dict) else None
    sha, length = (raw.get("sha256"), raw.get("length")) if isinstance(raw, dict) else (None, None)
    if (
        not isinstance(target, str)
        or not target.startswith("artifacts/")
        or ".." in target
        or not isinstance(sha, str)
        or len(sha) != 64
        or isinstance(length, bool)
        or not isinstance(length, int)
        or length < 1
    ):
        raise UntrustedArtifactError(
            f"the deployment's profile entry {str(raw)[:120]!r} is not "
            "{target (artifacts/...), sha256 (64 hex digits), length >= 1}",
            hint="the control plane wrote a bad document; re-publish the deployment",
        )
    return ProfileTarget(target, sha, length)


def _matching_profile(tuf: TufSession, wanted: ProfileTarget) -> TargetFile:
    """The signed facts of the profile, checked against what the document says."""
    info = tuf.info(wanted.target)
    signed = info.hashes.get("sha256")
    if info.length != wanted.length or signed != wanted.sha256:
        raise UntrustedArtifactError(
            f"{wanted.target}: the deployment says {wanted.length} B sha256 "
            f"{wanted.sha256[:12]}, the signed targets say {info.length} B sha256 "
            f"{str(signed)[:12]}",
            hint="the deployment and the targets metadata disagree; re-publish the deployment",
        )
    return info


def guard_breach(figures: HealthFigures, guard: Guard) -> str | None:
    """Why ``figures`` breach ``guard``, or None (too few requests to judge: no breach)."""
    if figures.requests == 0 or figures.requests < guard.min_requests:
        return None
    rate, p99 = figures.error_rate, figures.p99_ms
    if guard.max_error_rate is not None and rate is not None and rate > guard.max_error_rate:
        return (f"error rate {rate:.3f} ({figures.errors}/{figures.requests}) > "
                f"{guard.max_error_rate}")  # fmt: skip
    if guard.max_p99_ms is not None and p99 is not None and p99 > guard.max_p99_ms:
        return f"p99 {p99:.1f} ms > {guard.max_p99_ms} ms"
    return None


def _node_of(document: bytes) -> str:
    import json

    try:
        return str(json.loads(document).get("node_id"))
    except (ValueError, AttributeError):
        return ""
