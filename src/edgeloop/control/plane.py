"""``ControlPlane``: the registry, the update repository and the fleet tables behind one object.

Stateless over its database and artifact store: every method reads what it needs and writes in
one transaction, so any number of processes on one database behave as one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from edgeloop.control import auth, fleet, hotpath, tables
from edgeloop.control import deployments as dep
from edgeloop.control import rollout as machine
from edgeloop.core.errors import ConflictError, EdgeError
from edgeloop.core.settings import Settings
from edgeloop.core.types import ModelRef
from edgeloop.registry import tuf_store
from edgeloop.registry.database import Database, connect
from edgeloop.registry.registry import Registry
from edgeloop.registry.update_repo import Expiry, UpdateRepository

log = logging.getLogger("edgeloop.control")


@dataclass
class ControlPlane:
    settings: Settings
    db: Database
    registry: Registry
    repo: UpdateRepository
    admin_hash: str
    _hot: tuple[hotpath.KeptReads, hotpath.GroupCommit] | None = field(default=None, repr=False)
    # What parts of the app opened over this plane and must close with it (their own engines).
    _closers: list[Callable[[], None]] = field(default_factory=list, repr=False)

    def on_close(self, close: Callable[[], None]) -> None:
        """Call ``close`` (first) when the plane closes."""
        self._closers.append(close)

    @property
    def hot(self) -> tuple[hotpath.KeptReads, hotpath.GroupCommit]:
        """The agents' hot path: kept-connection reads and group-committed writes."""
        if self._hot is None:
            self._hot = (hotpath.KeptReads(self.db), hotpath.GroupCommit(self.db))
        return self._hot

    @classmethod
    def open(
        cls,
        home: Path | str | None = None,
        db_url: str | None = None,
        admin_token: str | None = None,
        expiry: Expiry | None = None,
        artifacts_url: str | None = None,
    ) -> tuple[ControlPlane, str]:
        """Open (creating on first use) the control plane of ``home``; returns it and the
        admin token. Raises ConfigError / StoreError."""
        settings = Settings.load(home, db_url, artifacts_url).ensure()
        folder = settings.home / "control"
        token = auth.admin_token(folder, admin_token)
        db = connect(settings.db_url)
        registry = Registry.open(settings)
        repo = UpdateRepository.open(db, folder / "keys", expiry)
        tables.create_tables(db)
        return cls(settings, db, registry, repo, auth.token_hash(token)), token

    def close(self) -> None:
        while self._closers:
            self._closers.pop()()
        if self._hot is not None:
            self._hot[1].close()
            self._hot[0].close()
            self._hot = None
        self.registry.close()
        self.db.engine.dispose()

    # --- reads ------------------------------------------------------------------------------

    def read(self, action: str, run: Any) -> Any:
        def go() -> Any:
            with self.db.engine.connect() as conn:
                return run(conn)

        return tuf_store.guarded(self.db, action, go)

    def write(self, action: str, run: Any) -> Any:
        def go() -> Any:
            with self.db.write() as conn:
                return run(conn)

        return tuf_store.retrying(self.db, action, go)

    def node(self, node_id: str) -> dict[str, Any]:
        return dict(
            self.read(f"reading node {node_id}", lambda c: fleet.to_dict(fleet.get(c, node_id)))
        )

    def nodes(self) -> list[dict[str, Any]]:
        return list(self.read("listing nodes", lambda c: [fleet.to_dict(r) for r in fleet.rows(c)]))

    def desired(self, node_id: str) -> tuple[int, bytes | None]:
        """The node's desired revision and document bytes (None before its first)."""
        row = self.read(f"reading node {node_id}", lambda c: fleet.get(c, node_id))
        return int(row.desired_revision), None if row.desired is None else row.desired.encode()

    def rollout(self, rollout_id: str) -> dict[str, Any]:
        return dict(
            self.read(f"reading rollout {rollout_id}", lambda c: machine.to_dict(c, rollout_id))
        )

    def rollouts(self) -> list[dict[str, Any]]:
        def run(conn: sa.Connection) -> list[dict[str, Any]]:
            return [machine.to_dict(conn, i) for i in machine.ids(conn)]

        return list(self.read("listing rollouts", run))

    # --- writes -----------------------------------------------------------------------------

    def publish_artifact(self, ref: ModelRef, main: ModelRef) -> dict[str, Any]:
        """The document entry of ``ref`` (self-test computed now), its artifact published as a
        TUF target unless already there with the same bytes."""
        entry, note = dep.artifact_entry(self.registry, ref, main)
        variant = ModelRef.parse(entry["variant"])
        signed = self.repo.targets()
        changes: dict[str, bytes | Path | None] = {}
        if _unsigned(signed, entry):
            changes[entry["target"]] = self.registry.resolve(variant)[1]
        profile = entry.get("profile")
        if profile is not None and _unsigned(signed, profile):
            path = self.registry.profile(variant)[1]  # verified against the manifest's sha256
            if path is not None:
                changes[profile["target"]] = path
        if changes:  # the model and its profile signed in one targets version
            self.repo.publish_targets(changes)
        if entry["self_test"] is None:
            log.warning("artifact %s has no self-test: %s", entry["target"], note)
        entry["self_test_note"] = note
        return entry

    def deploy(self, spec: dep.DeploymentSpec) -> dict[str, Any]:
        """Create a rollout of ``spec`` (it starts at the next tick)."""
        refs = {spec.model, *spec.variants.values()}
        main = spec.model if spec.model.version is not None else self.registry.show(spec.model).ref
        manifests = {ref: self.registry.show(ref).manifest.to_dict() for ref in refs}
        if not spec.force_spec_change:  # checked before anything is published or started
            self.read(
                f"checking deployment {spec.name}",
                lambda c: self._refuse_spec_change(c, spec, manifests),
            )
        entries = {}
        for ref in refs:
            pinned = self.registry.show(ref).ref
            entries[str(ref)] = self.publish_artifact(pinned, main)

        def create(conn: sa.Connection) -> str:
            # Checked again in the transaction that creates the rollout: another deployment
            # may have changed a node's desired model since the first check.
            if not spec.force_spec_change:
                self._refuse_spec_change(conn, spec, manifests)
            return machine.create(conn, spec, entries)

        rollout_id = self.write(f"creating rollout {spec.name}", create)
        self.tick(rollout_id)
        return self.rollout(rollout_id)

    def _refuse_spec_change(
        self,
        conn: sa.Connection,
        spec: dep.DeploymentSpec,
        manifests: dict[ModelRef, dict[str, Any]],
    ) -> None:
        """Raise ConflictError when, on a node ``spec`` selects, the model it would replace
        (same name in the node's desired document) has other inputs or outputs.

        ``manifests``: the registry manifest of every ref ``spec`` names (read beforehand, so
        the check holds no registry call inside the database transaction)."""
        found: list[str] = []
        for row in fleet.rows(conn):
            if row.desired is None or not fleet.matches(row, spec.selector):
                continue
            ref = spec.ref_for(row.device_class)
            for old in json.loads(row.desired)["models"]:
                if old["name"] != spec.model.name:
                    continue
                for change in dep.spec_changes(old["manifest"], manifests[ref]):
                    found.append(f"{row.name} ({old['variant']} -> {ref}): {change}")
        if found:
            raise ConflictError(
                f"deployment {spec.name!r} changes the inputs/outputs clients call: "
                + "; ".join(found[:8])
                + (f"; and {len(found) - 8} more" if len(found) > 8 else ""),
                hint="clients of the deployed model would break; to deploy anyway pass "
                '--force-spec-change (API: "force_spec_change": true)',
            )

    def tick(self, rollout_id: str) -> machine.State:
        return machine.State(
            self.write(
                f"ticking rollout {rollout_id}", lambda c: machine.tick(c, self.repo, rollout_id)
            )
        )

    def tick_all(self) -> None:
        """One tick of every rollout still moving; a failing one does not stop the others."""
        for rollout_id in self.read("listing rollouts", lambda c: machine.ids(c, machine.TICKING)):
            try:
                self.tick(rollout_id)
            except EdgeError as exc:
                log.warning("tick of rollout %s failed: %s", rollout_id, exc)
            except Exception:  # a bug in one rollout's tick must not freeze every other rollout
                log.exception("tick of rollout %s failed unexpectedly", rollout_id)

    def rollback(self, rollout_id: str, to: str | None) -> dict[str, Any]:
        entry = None
        if to is not None:
            ref = ModelRef.parse(to)
            entry = self.publish_artifact(self.registry.show(ref).ref, self.registry.show(ref).ref)
        label = to or "the previous documents"
        self.write(
            f"rolling back {rollout_id}",
            lambda c: machine.rollback(c, self.repo, rollout_id, entry, label),
        )
        return self.rollout(rollout_id)

    def pause(self, rollout_id: str) -> dict[str, Any]:
        self.write(f"pausing {rollout_id}", lambda c: machine.pause(c, rollout_id))
        return self.rollout(rollout_id)

    def resume(self, rollout_id: str) -> dict[str, Any]:
        self.write(f"resuming {rollout_id}", lambda c: machine.resume(c, rollout_id))
        return self.rollout(rollout_id)

    def tuf_root(self) -> dict[str, Any]:
        return dict(json.loads(self.repo.root_bytes()))


def _unsigned(signed: Mapping[str, Any], entry: Mapping[str, Any]) -> bool:
    """Whether ``entry``'s target is not yet signed with ``entry``'s sha256."""
    known = signed.get(entry["target"])
    return known is None or known.hashes.get("sha256") != entry["sha256"]
