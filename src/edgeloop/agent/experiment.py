"""A fleet A/B experiment on this node: serve the champion and the challenger with a split.

The champion arrives the usual way (the updater stages, self-tests, activates, watches and
commits it); the active slot's signed document names the challenger in ``serving.experiment``
(:mod:`edgeloop.agent.experiment_spec`). Between updater runs, :meth:`ExperimentHost.sync`
brings the server in line with the active slot:

- an experiment named and not yet served: fetch the challenger and its profile through TUF
  (checked against the signed targets), self-test it, lay both versions out in the
  model-repository layout under ``HOME/agent/experiment/`` (the champion's files hard-linked from
  the slot), set the model's split and hot-swap to that folder (``Catalog.place``);
- none named any more (a promote, a revert, another deployment): serve the slot's folder alone,
  drop the split and the folder.

The split is set before the swap, so no request ever reaches the challenger unsplit. A
challenger that fails its check is not served; the report says why (``active.experiment``). The
per-arm counts (:mod:`edgeloop.agent.arm_counts`) ride on every report.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeloop.agent.activator import serving_config
from edgeloop.agent.arm_counts import ArmCounts, read_counts
from edgeloop.agent.deployment import ModelSpec
from edgeloop.agent.experiment_spec import ArmSpec, parse_experiment
from edgeloop.agent.fetcher import HttpxFetcher
from edgeloop.agent.home import AgentHome
from edgeloop.agent.reconcile import Reconciler
from edgeloop.agent.self_test import run_self_test
from edgeloop.agent.slots import PROFILE_FILE, SlotModel
from edgeloop.agent.tuf_client import TufSession
from edgeloop.agent.update_state import now_iso
from edgeloop.agent.updater import UpdateFailedError, profile_target
from edgeloop.core.errors import ConfigError, EdgeError, UntrustedArtifactError
from edgeloop.serving.catalog import Catalog
from edgeloop.serving.config import ServerConfig
from edgeloop.serving.feedback import Feedback
from edgeloop.serving.metrics import ServerMetrics
from edgeloop.serving.repository import Origin
from edgeloop.serving.routing import Routing, Split

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Applied:
    """The experiment served now: its spec, the slot and revision it came with, the baseline."""

    spec: ArmSpec
    slot: str
    revision: int
    since: str
    base: dict[str, ArmCounts]


class ExperimentHost:
    """Serves the active slot's experiment (see the module docstring)."""

    def __init__(
        self,
        home: AgentHome,
        catalog: Catalog,
        metrics: ServerMetrics,
        feedback: Feedback,
        reconciler: Reconciler,
    ) -> None:
        self.home = home
        self.catalog = catalog
        self.metrics = metrics
        self.feedback = feedback
        self.reconciler = reconciler
        self.applied: Applied | None = None
        self.failed: tuple[str, int, str] | None = None  # (experiment id, revision, why)
        self.folder = home.root / "experiment"

    async def run(self, every_s: float) -> None:
        """Sync every ``every_s`` seconds until cancelled; failures are logged and reported."""
        while True:
            try:
                await self.sync()
            except EdgeError as exc:
                log.warning("experiment: %s", exc.message)
            except Exception:  # a bug here must not stop the node serving
                log.exception("experiment sync failed")
            await asyncio.sleep(every_s)

    async def sync(self) -> None:
        """Serve what the active slot's document asks for (nothing while an update runs)."""
        if self.reconciler.updating or self.catalog.stopping:
            return
        slots = self.reconciler.updater.slots
        active = slots.read(slots.active_name())
        want = None
        if active is not None:
            try:
                want = parse_experiment(active.document, active.name, active.version)
            except UntrustedArtifactError as exc:
                self.failed = ("?", active.revision, exc.message)
        here = self.applied
        if here is not None and active is not None and _same(here, want, active):
            return
        if here is not None:
            await self._end(active)
        if want is None or active is None:
            return
        if self.failed is not None and self.failed[:2] == (want.experiment_id, active.revision):
            return  # failed for this document already: wait for another
        try:
            await self._start(want, active)
        except EdgeError as exc:
            self.failed = (want.experiment_id, active.revision, exc.message)
            log.warning("experiment %s not served: %s", want.experiment_id, exc.message)

    async def _start(self, spec: ArmSpec, active: SlotModel) -> None:
        root = self.folder / spec.experiment_id / "model" / spec.model
        await asyncio.to_thread(shutil.rmtree, self.folder, True)
        await asyncio.to_thread(self._fetch, spec.challenger, root / str(spec.challenger.version))
        engine = serving_config(ServerConfig(), active.document)[0].engine
        file = root / str(spec.challenger.version) / f"model{spec.challenger.suffix}"
        result = await asyncio.to_thread(run_self_test, file, spec.challenger.self_test, engine)
        if not result.passed:
            raise UpdateFailedError(f"the challenger's self-test failed: {result.detail}")
        await asyncio.to_thread(_link_tree, active.folder / str(active.version),
                                root / str(active.version))  # fmt: skip
        slots = self.reconciler.updater.slots
        if self.reconciler.updating or slots.active_name() != active.slot:
            return  # the updater moved on meanwhile: the next sync decides again
        model = self.catalog.model(spec.model)
        champion, challenger = spec.versions
        if spec.shadow:  # the champion answers everything, the challenger gets copies
            model.routing = Routing(Split(((champion, 1.0),)), shadow=challenger)
        else:
            model.routing = Routing(Split(((champion, 1.0 - spec.split), (challenger, spec.split))))
        try:
            await self.catalog.place(Origin(spec.model, root))
        except BaseException:
            model.routing = Routing()
            raise
        base = read_counts(self.metrics, self.feedback.outcomes, spec.model, spec.versions,
                           _shadow(spec))  # fmt: skip
        self.applied = Applied(spec, active.slot, active.revision, now_iso(), base)
        self.failed = None
        log.info("experiment %s: %s split %s", spec.experiment_id, spec.model, model.routing)

    async def _end(self, active: SlotModel | None) -> None:
        here = self.applied
        if here is None:
            return
        name = here.spec.model
        if active is not None and active.name == name and name in self.catalog.models:
            await self.catalog.place(Origin(name, active.folder))
        served = self.catalog.models.get(name)
        if served is not None:
            served.routing = Routing()
        self.applied = None
        await asyncio.to_thread(shutil.rmtree, self.folder, True)
        log.info("experiment %s ended on this node", here.spec.experiment_id)

    def _fetch(self, spec: ModelSpec, folder: Path) -> None:
        """The challenger and its profile, verified through TUF, into ``folder``."""
        identity = self.reconciler.identity
        if identity is None:
            raise ConfigError("this node is not enrolled; it cannot fetch the challenger")
        fetcher = HttpxFetcher(identity.node_token, self.home.downloads, identity.targets_url,
                               deadline_s=self.reconciler.options.download_deadline_s,
                               parent=self.reconciler.parent, node_id=identity.node_id,
                               sources=self.reconciler.sources)  # fmt: skip
        try:
            session = TufSession(self.home, identity.metadata_url, identity.targets_url, fetcher)
            wanted = [(session.matching(spec), f"model{spec.suffix}")]
            profile = profile_target(spec.raw)
            if profile is not None:
                info = session.info(profile.target)
                if info.length != profile.length or info.hashes.get("sha256") != profile.sha256:
                    raise UntrustedArtifactError(
                        f"{profile.target}: the document and the signed targets disagree"
                    )
                wanted.append((info, PROFILE_FILE))
            folder.mkdir(parents=True, exist_ok=True)
            for info, leaf in wanted:
                session.download(info)
                path = session.verify(info)
                shutil.move(path, folder / leaf)
        finally:
            fetcher.close()

    def report(self, model: SlotModel) -> dict[str, Any]:
        """The report's ``active.experiment``: per-arm counts since applied, or why not."""
        here = self.applied
        if here is not None and here.spec.model == model.name:
            now = read_counts(self.metrics, self.feedback.outcomes, model.name,
                              here.spec.versions, _shadow(here.spec))  # fmt: skip
            served = self.catalog.models.get(model.name)
            return {
                "experiment": {
                    "id": here.spec.experiment_id,
                    "state": "serving",
                    "since": here.since,
                    "split": served.routing.to_dict()["split"] if served else None,
                    "shadow": served.routing.shadow if served else None,
                    "arms": {v: c.minus(here.base[v]).to_dict() for v, c in now.items()},
                }
            }
        if self.failed is not None and self.failed[1] == model.revision:
            return {"experiment": {"id": self.failed[0], "state": "failed",
                                   "error": self.failed[2][:500]}}  # fmt: skip
        return {}


def _shadow(spec: ArmSpec) -> str | None:
    return str(spec.challenger.version) if spec.shadow else None


def _same(here: Applied, want: ArmSpec | None, active: SlotModel) -> bool:
    return want == here.spec and active.slot == here.slot and active.revision == here.revision


def _link_tree(source: Path, target: Path) -> None:
    """``source``'s files into ``target``: hard links (same bytes, same stamps), else copies."""
    target.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.is_file():
            try:
                os.link(item, target / item.name)
            except OSError:
                shutil.copy2(item, target / item.name)
