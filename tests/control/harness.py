"""The control plane's app driven in-process (httpx ASGITransport in an anyio portal), and a
node that talks to it over HTTP the way the agent does: enroll, read its desired document
through the TUF target URL, report what it serves."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from anyio.from_thread import BlockingPortal, start_blocking_portal

from edgeloop.control.app import create_app
from edgeloop.control.plane import ControlPlane
from edgeloop.core.types import Manifest, TensorSpec
from edgeloop.registry.update_repo import Expiry


class Control:
    """Synchronous access to the app; ``admin`` headers carry the admin token."""

    def __init__(self, portal: BlockingPortal, plane: ControlPlane, admin_token: str) -> None:
        self.portal = portal
        self.plane = plane
        self.admin_token = admin_token
        self.admin = {"Authorization": f"Bearer {admin_token}"}
        app = create_app(plane, tick_s=None)
        self.client: httpx.AsyncClient = portal.call(self._client, app)

    @staticmethod
    async def _client(app: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ctl")

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self.portal.call(lambda: self.client.request(method, url, **kwargs))

    def ok(self, method: str, url: str, **kwargs: Any) -> Any:
        """The JSON answer of a call that must succeed (else the test fails with the body)."""
        kwargs.setdefault("headers", self.admin)
        response = self.request(method, url, **kwargs)
        assert response.status_code < 300, f"{method} {url}: {response.status_code} {response.text}"
        return response.json() if response.content else None

    def enroll(self, name: str, labels: dict[str, str] | None = None) -> Node:
        token = self.ok("POST", "/api/v1/enrollment-tokens", json={"labels": labels or {}})
        body = {
            "enrollment_token": token["token"],
            "name": name,
            "capabilities": {"arch": "x86_64", "accelerators": [], "providers": ["CPU"]},
            "agent_url": None,
        }
        answer = self.ok("POST", "/api/v1/enroll", json=body, headers={})
        return Node(self, answer["node_id"], answer["node_token"], answer)

    def publish(self, model: Path, name: str) -> dict[str, Any]:
        manifest = Manifest(
            name=name,
            format="onnx",
            inputs=(TensorSpec("input", (None, 4)),),
            outputs=(TensorSpec("output", (None, 3)),),
        )
        files = {"file": ("model.onnx", model.read_bytes())}
        data = {"manifest": json.dumps(manifest.to_dict())}
        return dict(self.ok("POST", "/api/v1/models", files=files, data=data))

    def tick(self, times: int = 1) -> None:
        for _ in range(times):
            self.plane.tick_all()


class Node:
    """An enrolled node acting over HTTP: reads its document, reports serving it (or not)."""

    def __init__(self, ctl: Control, node_id: str, token: str, answer: dict[str, Any]) -> None:
        self.ctl, self.node_id, self.token, self.answer = ctl, node_id, token, answer
        self.auth = {"Authorization": f"Bearer {token}"}
        self.active: dict[str, Any] | None = None

    def desired(self) -> dict[str, Any]:
        return dict(self.ctl.ok("GET", f"/api/v1/nodes/{self.node_id}/desired", headers=self.auth))

    def document(self) -> dict[str, Any]:
        """The node's signed deployment document, fetched from its consistent-snapshot URL."""
        targets = json.loads(self.ctl.plane.repo.metadata("targets.json"))["signed"]["targets"]
        info = targets[f"deployments/{self.node_id}.json"]
        url = f"/tuf/targets/deployments/{info['hashes']['sha256']}.{self.node_id}.json"
        response = self.ctl.request("GET", url, headers=self.auth)
        assert response.status_code == 200, response.text
        assert hashlib.sha256(response.content).hexdigest() == info["hashes"]["sha256"]
        return dict(json.loads(response.content))

    def act(self, *, healthy: bool = True, error_rate: float = 0.0) -> dict[str, Any]:
        """Take the desired document and report: serving its model (``healthy``) or having
        rolled back to what it served before."""
        doc = self.document()
        models = doc["models"]
        if healthy and models:
            self.active = {k: models[0][k] for k in ("name", "version", "variant", "sha256")}
        report = {
            "revision": doc["revision"],
            "updater": {"state": "IDLE", "target_revision": None, "error": None},
            "active": self.active,
            "previous": None,
            "self_test": {"passed": healthy, "max_abs_diff": 0.0, "at": "now"},
            "health": {"window_s": 30, "requests": 50, "errors": int(50 * error_rate),
                       "error_rate": error_rate, "p99_ms": 3.0},
            "events": [],
        }  # fmt: skip
        if not healthy:
            report["updater"] = {"state": "IDLE", "target_revision": None,
                                 "error": "self-test failed",
                                 "failed_revision": doc["revision"]}  # fmt: skip
        self.report(report)
        return doc

    def report(self, report: dict[str, Any]) -> None:
        self.ctl.ok("POST", f"/api/v1/nodes/{self.node_id}/report", json=report, headers=self.auth)


@contextlib.contextmanager
def control(home: Path, db_url: str | None = None) -> Iterator[Control]:
    """A control plane on ``home`` (SQLite there unless ``db_url``) and its app in a portal."""
    plane, token = ControlPlane.open(home, db_url, None, Expiry())
    with start_blocking_portal(backend="asyncio") as portal:
        ctl = Control(portal, plane, token)
        try:
            yield ctl
        finally:
            portal.call(ctl.client.aclose)
            plane.close()
