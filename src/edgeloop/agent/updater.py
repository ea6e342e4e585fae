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
import time
from pathlib import Path

from edgeloop.agent.activator import serving_config
from edgeloop.agent.deployment import Deployment, ModelSpec
from edgeloop.agent.self_test import run_self_test
from edgeloop.agent.tuf_client import TufSession
from edgeloop.agent.update_checks import (
    ProfileTarget,
    guard_breach,
    matching_profile,
    profile_target,
)
from edgeloop.agent.update_recovery import (
    MAX_ATTEMPTS,
    PAUSE_ENV,
    PRE_ACTIVATE,
    Activator,
    UpdateRecovery,
)
from edgeloop.agent.update_state import Outcome, UpdateState, now_iso
from edgeloop.core.errors import ConfigError, EdgeError, TransportError, UntrustedArtifactError
from edgeloop.serving.config import ServerConfig

__all__ = [
    "MAX_ATTEMPTS",
    "PAUSE_ENV",
    "Activator",
    "ProfileTarget",
    "UpdateFailedError",
    "Updater",
    "guard_breach",
    "profile_target",
]

log = logging.getLogger(__name__)
S = UpdateState


class UpdateFailedError(EdgeError):
    """An update step failed; the message says which and why (the updater rolls back)."""


class Updater(UpdateRecovery):
    """Runs one deployment at a time through the states; owns the record and the slots.

    The record, recovery on start and the endings (commit, rollback) are
    :class:`~edgeloop.agent.update_recovery.UpdateRecovery`'s; the steps of one update are here.
    """

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
            if self.record.state not in PRE_ACTIVATE:
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
            profile_info = await asyncio.to_thread(matching_profile, tuf, wanted)
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
