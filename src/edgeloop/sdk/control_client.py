"""``ControlClient``: the control plane's admin API from Python (over HTTP, httpx).

    with ControlClient("http://127.0.0.1:8700", admin_token) as ctl:
        token = ctl.enrollment_token(labels={"site": "a"})["token"]
        ctl.publish_model(Path("model.onnx"), manifest)
        rollout = ctl.deploy({"name": "prod", "model": "digits:1",
                              "plan": {"waves": ["1", "100%"], "soak_s": 30}})
        ctl.wait_rollout(rollout["rollout_id"], {"COMPLETED"})

An error answer becomes the EdgeError its ``type`` names (ConfigError, NotFoundError, ...);
an unreachable control plane a TransportError. Timeouts are finite by default.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Collection, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx

from edgeloop.core.errors import (
    ConflictError,
    NotFoundError,
    TransportError,
    UntrustedArtifactError,
)
from edgeloop.core.tls import TlsConfig, client_context
from edgeloop.core.types import Manifest
from edgeloop.sdk.control_errors import answer_error
from edgeloop.sdk.publish_plan import ALREADY_THERE, publish_plan

if TYPE_CHECKING:  # the registry package pulls SQLAlchemy; only its value type is named here
    from edgeloop.registry.store import ModelVersion

# Names tests and callers import from here; the pure publish check is sdk/publish_plan.py.
__all__ = ["ALREADY_THERE", "CHECKPOINT_FILES", "ControlClient", "publish_plan"]

# a checkpoint folder's files (training/checkpoint.py), by their key in recipe.checkpoint
CHECKPOINT_FILES = {"weights": "model.pt", "config": "model.json"}


def _env_bundle() -> Path | None:
    bundle = os.environ.get("EDGELOOP_CA_BUNDLE")
    return Path(bundle) if bundle else None


class ControlClient:
    """Admin calls of one control plane (see docs/fleet-protocol.md for the shapes)."""

    def __init__(
        self, url: str, admin_token: str, timeout_s: float = 30.0, tls: TlsConfig | None = None
    ) -> None:
        """``tls``: the CA bundle to verify an https control plane with (and a client
        certificate for mutual TLS); default: ``EDGELOOP_CA_BUNDLE`` if set, else the system's
        trust store. Raises ConfigError for an unusable TLS file."""
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {admin_token}"},
            timeout=timeout_s,
            verify=client_context(tls or TlsConfig(ca_bundle=_env_bundle())),
        )

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """One call; the decoded JSON answer (None for an empty one).

        Raises:
            TransportError: unreachable, or an answer that is not an error body.
            The EdgeError the answer's ``type`` names (ConfigError, NotFoundError, ...).
        """
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise TransportError(
                f"control plane {self.url} did not answer {method} {path}: {exc}",
                hint="check that `edgeloop control` runs there and the URL is right",
            ) from exc
        if response.status_code >= 400:
            raise answer_error(response, f"{method} {path}")
        return response.json() if response.content else None

    def health(self) -> dict[str, Any]:
        return dict(self.call("GET", "/healthz"))

    def enrollment_token(
        self,
        labels: Mapping[str, str] | None = None,
        tier: int | None = None,
        parent: str | None = None,
        ttl_s: int | None = None,
    ) -> dict[str, Any]:
        """A one-time enrollment token: ``{"token", "expires_at"}``."""
        body: dict[str, Any] = {"labels": dict(labels or {}), "tier": tier, "parent": parent}
        if ttl_s is not None:
            body["ttl_s"] = ttl_s
        return dict(self.call("POST", "/api/v1/enrollment-tokens", json=body))

    def nodes(self) -> list[dict[str, Any]]:
        return list(self.call("GET", "/api/v1/nodes")["nodes"])

    def node(self, node_id: str) -> dict[str, Any]:
        return dict(self.call("GET", f"/api/v1/nodes/{node_id}"))

    def label(self, node_id: str, labels: Mapping[str, str]) -> dict[str, Any]:
        return dict(self.call("PATCH", f"/api/v1/nodes/{node_id}", json={"labels": dict(labels)}))

    def telemetry(self, **params: str | int) -> list[dict[str, Any]]:
        """Stored telemetry items (``node``, ``kind``, ``since``, ``until``, ``limit``, ...),
        oldest first."""
        query = {k: str(v) for k, v in params.items()}
        return list(self.call("GET", "/api/v1/telemetry", params=query)["items"])

    def models(self) -> list[dict[str, Any]]:
        return list(self.call("GET", "/api/v1/models")["models"])

    def publish_model(
        self,
        file: Path,
        manifest: Manifest | Mapping[str, Any],
        *,
        profile: Path | None = None,
        checkpoint: Path | None = None,
    ) -> dict[str, Any]:
        """Upload ``file`` as the next version of the manifest's model (with its reference
        ``profile`` file when given); the version's record. ``checkpoint``: the torch checkpoint
        folder it was exported from (``edgeloop train --out``), stored first and named in the
        manifest's ``recipe.checkpoint`` so pruning and retraining can start from it.

        Raises:
            NotFoundError: ``file`` (or the checkpoint's files) does not exist (checked here,
                before any upload).
        """
        path = Path(file)
        if not path.is_file():
            raise NotFoundError(f"model file {str(path)!r} does not exist")
        doc = manifest.to_dict() if isinstance(manifest, Manifest) else dict(manifest)
        if checkpoint is not None:
            doc["recipe"] = {**(doc.get("recipe") or {}), "checkpoint": self.put_checkpoint(
                Path(checkpoint))}  # fmt: skip
        with path.open("rb") as fh, contextlib.ExitStack() as stack:
            files = {"file": (path.name, fh, "application/octet-stream")}
            if profile is not None:
                held = stack.enter_context(Path(profile).open("rb"))
                files["profile"] = ("model.profile.npz", held, "application/octet-stream")
            return dict(
                self.call("POST", "/api/v1/models", files=files, data={"manifest": json.dumps(doc)})
            )

    def publish_version(
        self,
        file: Path,
        version: ModelVersion,
        parent_sha256: str | None = None,
        *,
        profile: Path | None = None,
    ) -> dict[str, Any]:
        """Publish the local registry ``version`` (its artifact ``file``) on the control plane
        under the same name and version, with its manifest as it is (lineage, measurements,
        data hash, recipe). ``parent_sha256``: the local parent's artifact, which the fleet's
        parent must match. Returns ``{"ref", "sha256", "status": "published" | "already on the
        fleet", "record"}`` (``record``: the control plane's answer, None when already there).
        ``profile``: the version's reference profile file, uploaded beside the model.

        The control plane numbers versions itself (the next of the name), so the version is kept
        only when it is that next number; the requested number travels in the ``version`` form
        field for a control plane that honours it.

        Raises:
            ConflictError: the fleet holds another model under this ref or the parent's, or
                would number it differently (nothing is published then), or numbered it
                differently after all (a concurrent publish; the message names the version).
            NotFoundError: the parent is not on the fleet (its lineage would break).
        """
        if publish_plan(version, parent_sha256, self.models()) == ALREADY_THERE:
            return {"ref": str(version.ref), "sha256": version.artifact_sha256,
                    "status": ALREADY_THERE, "record": None}  # fmt: skip
        path = Path(file)
        with path.open("rb") as fh, contextlib.ExitStack() as stack:
            files = {"file": (f"model.{version.manifest.format}", fh, "application/octet-stream")}
            if profile is not None:
                held = stack.enter_context(Path(profile).open("rb"))
                files["profile"] = ("model.profile.npz", held, "application/octet-stream")
            fields = {
                "manifest": json.dumps(version.manifest.to_dict()),
                "version": str(version.version),
                "sha256": version.artifact_sha256,
            }
            record = dict(self.call("POST", "/api/v1/models", files=files, data=fields))
        if record.get("version") != version.version:
            raise ConflictError(
                f"the control plane published {version.ref} as {version.name}:"
                f"{record.get('version')} (another publish of {version.name!r} ran at the same "
                f"time); the fleet's {version.name}:{record.get('version')} is this model "
                f"(sha256 {version.artifact_sha256})",
                hint=f"deploy {version.name}:{record.get('version')}, or publish locally again "
                "so the numbers line up",
            )
        return {"ref": str(version.ref), "sha256": version.artifact_sha256,
                "status": "published", "record": record}  # fmt: skip

    def download_artifact(self, row: Mapping[str, Any], dest: Path) -> Path:
        """Download the artifact of a ``/api/v1/models`` row into ``dest`` and check its sha256.

        Raises:
            NotFoundError: the control plane does not hold that artifact.
            UntrustedArtifactError: the bytes do not hash to the row's sha256.
        """
        import hashlib

        sha = str(row["sha256"])
        digest = hashlib.sha256()
        try:
            with (
                self._http.stream("GET", f"/api/v1/artifacts/{sha}") as response,
                dest.open("wb") as fh,
            ):
                if response.status_code >= 400:
                    response.read()
                    raise answer_error(response, f"GET artifact {row['ref']}")
                for chunk in response.iter_bytes():
                    digest.update(chunk)
                    fh.write(chunk)
        except httpx.HTTPError as exc:
            raise TransportError(
                f"control plane {self.url} did not send the artifact of {row['ref']}: {exc}"
            ) from exc
        if digest.hexdigest() != sha:
            dest.unlink(missing_ok=True)
            raise UntrustedArtifactError(
                f"the artifact of {row['ref']} hashes to {digest.hexdigest()[:12]}..., not the "
                f"listed {sha[:12]}...; it was removed",
                hint="the control plane's artifact store is corrupt or a proxy changed the bytes",
            )
        return dest

    def put_checkpoint(self, folder: Path) -> dict[str, str]:
        """Store a checkpoint folder's two files (``model.pt``, ``model.json``) on the control
        plane; their sha256s as a manifest's ``recipe.checkpoint`` names them.

        Raises:
            NotFoundError: the folder lacks one of the files.
        """
        found = {}
        for key, leaf in CHECKPOINT_FILES.items():
            part = folder / leaf
            if not part.is_file():
                raise NotFoundError(
                    f"checkpoint folder {str(folder)!r} has no {leaf}",
                    hint="give the folder `edgeloop train --out DIR` wrote",
                )
            with part.open("rb") as fh:
                answer = self.call("POST", "/api/v1/artifacts", files={"file": (leaf, fh)})
            found[key] = str(answer["sha256"])
        return found

    def get_checkpoint(self, stored: Mapping[str, str], folder: Path) -> Path:
        """Download the checkpoint ``stored`` names (``{"weights": SHA, "config": SHA}``) into
        ``folder``, each file checked against its sha256.

        Raises:
            NotFoundError: the control plane does not hold one of the files.
            UntrustedArtifactError: bytes that do not hash to the named sha256.
        """
        import hashlib

        folder.mkdir(parents=True, exist_ok=True)
        for key, leaf in CHECKPOINT_FILES.items():
            sha = str(stored[key])
            try:
                response = self._http.get(f"/api/v1/artifacts/{sha}")
            except httpx.HTTPError as exc:
                raise TransportError(f"control plane {self.url} did not send {sha}: {exc}") from exc
            if response.status_code >= 400:
                raise answer_error(response, f"GET checkpoint file {leaf}")
            if hashlib.sha256(response.content).hexdigest() != sha:
                raise UntrustedArtifactError(
                    f"the checkpoint's {leaf} from {self.url} does not hash to {sha[:12]}...; "
                    "it was not kept",
                )
            (folder / leaf).write_bytes(response.content)
        return folder

    def deploy(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        """Start a rollout of deployment ``spec``; the rollout."""
        return dict(self.call("POST", "/api/v1/deployments", json=dict(spec)))

    def rollouts(self) -> list[dict[str, Any]]:
        return list(self.call("GET", "/api/v1/rollouts")["rollouts"])

    def rollout(self, rollout_id: str) -> dict[str, Any]:
        return dict(self.call("GET", f"/api/v1/rollouts/{rollout_id}"))

    def rollback(self, rollout_id: str, to: str | None = None) -> dict[str, Any]:
        """Every node the rollout reached goes back (to ``to``, a ``name:version``, if given)."""
        body = {} if to is None else {"to": to}
        return dict(self.call("POST", f"/api/v1/rollouts/{rollout_id}/rollback", json=body))

    def pause(self, rollout_id: str) -> dict[str, Any]:
        return dict(self.call("POST", f"/api/v1/rollouts/{rollout_id}/pause"))

    def resume(self, rollout_id: str) -> dict[str, Any]:
        return dict(self.call("POST", f"/api/v1/rollouts/{rollout_id}/resume"))

    def wait_rollout(
        self, rollout_id: str, states: Collection[str], timeout_s: float = 120.0
    ) -> dict[str, Any]:
        """Poll until the rollout is in one of ``states``.

        Raises:
            TransportError: it was not within ``timeout_s`` (the message names its state).
        """
        deadline = time.monotonic() + timeout_s
        while True:
            current = self.rollout(rollout_id)
            if current["state"] in states:
                return current
            if time.monotonic() > deadline:
                events = current["events"][-3:]
                raise TransportError(
                    f"rollout {rollout_id} is {current['state']} after {timeout_s} s, not one "
                    f"of {sorted(states)}; last events: {events}"
                )
            time.sleep(0.2)
