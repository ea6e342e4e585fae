"""What the agent's tests stand the agent against: a real TUF repository and the control plane's
node-facing HTTP API, on a real loopback port.

The repository is the control plane's own :class:`UpdateRepository` (``tests/fleet_tuf.py``);
:func:`publish` signs an artifact and a node's deployment document the way the control plane
does (self-test outputs computed with ONNX Runtime). :class:`ControlStub` answers
``/api/v1/enroll``, ``/api/v1/nodes/{id}/desired`` (ETag / 304) and ``/report`` (kept in
``reports``), and serves
``/tuf/...`` through :meth:`TufServer.body` (so ``overrides`` forge bytes, as in the attack
tests). It is the node-facing half of the contract only; the control plane's own tests cover
the rest.
"""

from __future__ import annotations

import http.server
import json
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import onnxruntime as ort
from tests.fleet_tuf import TufServer, make_repository

from edgeloop.agent.deployment import encode_tensor
from edgeloop.agent.slots import sha256_file
from edgeloop.registry.update_repo import Expiry, UpdateRepository

NODE_ID = "node-1"
NODE_TOKEN = "node-token-1"
ENROLL_TOKEN = "enroll-token-1"


def self_test_for(model: Path, seed: int = 0, rows: int = 4) -> dict[str, Any]:
    """Seeded inputs and the outputs ONNX Runtime computes for them (as the control plane)."""
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in session.get_inputs():
        shape = [rows if not isinstance(d, int) else d for d in spec.shape]
        feeds[spec.name] = rng.standard_normal(shape).astype(np.float32)
    outputs = session.run(None, feeds)
    names = [o.name for o in session.get_outputs()]
    return {
        "inputs": {k: encode_tensor(v) for k, v in feeds.items()},
        "outputs": {n: encode_tensor(np.asarray(v)) for n, v in zip(names, outputs, strict=True)},
        "atol": 1e-4,
        "rtol": 1e-4,
    }


def deployment_doc(
    model: Path,
    revision: int,
    *,
    name: str = "linear",
    version: int = 1,
    node_id: str = NODE_ID,
    watch_s: float = 0.0,
    guard: dict[str, Any] | None = None,
    self_test: dict[str, Any] | None = None,
    serving: dict[str, Any] | None = None,
) -> tuple[str, bytes]:
    """The artifact's target path and the node's document naming it."""
    target = f"artifacts/{name}-{version}.onnx"
    doc = {
        "schema": 1,
        "node_id": node_id,
        "revision": revision,
        "models": [
            {
                "name": name,
                "version": version,
                "variant": f"{name}:{version}",
                "target": target,
                "sha256": sha256_file(model),
                "length": model.stat().st_size,
                "manifest": {},
                "self_test": self_test if self_test is not None else self_test_for(model),
            }
        ],
        "serving": serving or {},
        "watch_s": watch_s,
        "guard": guard or {},
        "rollout": "r1",
        "wave": 0,
    }
    return target, json.dumps(doc).encode()


def publish(repo: UpdateRepository, model: Path, revision: int, **kwargs: Any) -> bytes:
    """Sign ``model`` as an artifact and the node's document naming it; the document."""
    node_id = kwargs.get("node_id", NODE_ID)
    target, doc = deployment_doc(model, revision, **kwargs)
    repo.publish_targets({target: model, f"deployments/{node_id}.json": doc})
    return doc


def publish_doc(repo: UpdateRepository, revision: int, **fields: Any) -> bytes:
    """Sign a document for the node with exactly ``fields`` besides schema/node/revision."""
    doc = json.dumps({"schema": 1, "node_id": NODE_ID, "revision": revision, **fields}).encode()
    repo.publish_targets({f"deployments/{NODE_ID}.json": doc})
    return doc


def new_repository(folder: Path, expiry: Expiry | None = None) -> UpdateRepository:
    return make_repository(folder, expiry)


class ControlStub(TufServer):
    """The node-facing control plane API over a real repository (see the module doc)."""

    def __init__(self, repo: UpdateRepository) -> None:
        super().__init__(repo, token=NODE_TOKEN)
        self.revision = 0
        self.reports: list[dict[str, Any]] = []
        self.enrollments = 0
        self.down = False  # True: every API call answers 503 (the control plane is "down")
        self.garbage = False  # True: the desired state answers 200 with a body that is not JSON
        self._httpd.RequestHandlerClass = self._api_handler(self._httpd.RequestHandlerClass)

    def set_desired(self, revision: int) -> None:
        self.revision = revision

    def last_report(self) -> dict[str, Any] | None:
        return self.reports[-1] if self.reports else None

    def _api_handler(self, tuf_handler: Any) -> type[http.server.BaseHTTPRequestHandler]:
        stub = self

        class Handler(tuf_handler):  # type: ignore[misc, valid-type]
            def do_GET(self) -> None:  # noqa: N802 (http.server names it)
                if self.path.startswith("/tuf/"):
                    super().do_GET()
                    return
                if stub.down:
                    self._answer(503, b"")
                    return
                if self.path == f"/api/v1/nodes/{NODE_ID}/desired":
                    if self.headers.get("Authorization") != f"Bearer {NODE_TOKEN}":
                        self._answer(401, b"")
                        return
                    if stub.garbage:
                        self._answer(200, b"<html>not json</html>")
                        return
                    etag = f'"{stub.revision}"'
                    if self.headers.get("If-None-Match") == etag:
                        self._answer(304, b"", {"ETag": etag})
                        return
                    body = {
                        "node_id": NODE_ID,
                        "revision": stub.revision,
                        "target": f"deployments/{NODE_ID}.json",
                    }
                    self._answer(200, json.dumps(body).encode(), {"ETag": etag})
                    return
                self._answer(404, b"")

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"null")
                if stub.down:
                    self._answer(503, b"")
                    return
                if self.path == "/api/v1/enroll":
                    if body.get("enrollment_token") != ENROLL_TOKEN or stub.enrollments:
                        self._answer(401, b"")
                        return
                    stub.enrollments += 1
                    answer = {
                        "node_id": NODE_ID,
                        "node_token": NODE_TOKEN,
                        "tuf": {
                            "metadata_url": "/tuf/metadata/",
                            "targets_url": "/tuf/targets/",
                            "root": json.loads(stub.repo.root_bytes()),
                        },
                    }
                    self._answer(200, json.dumps(answer).encode())
                    return
                if self.path == f"/api/v1/nodes/{NODE_ID}/report":
                    stub.reports.append(body)
                    self._answer(204, b"")
                    return
                self._answer(404, b"")

        return Handler

    def __enter__(self) -> ControlStub:
        super().__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        super().__exit__(exc_type, exc, tb)
