"""The app driven in-process for the server tests, and request builders.

:func:`serving` starts a :class:`Catalog` and the app in an event loop on a background thread
(an anyio blocking portal) and yields a :class:`Harness` whose calls are synchronous and
thread-safe, so a test can send requests from many threads at once. httpx's ASGITransport talks
to the app directly, without a socket.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
import orjson
from anyio.from_thread import BlockingPortal, start_blocking_portal
from fastapi import FastAPI

from edgeloop.runtime import ModelPool
from edgeloop.serving import Catalog, ServerConfig, create_app, scan
from edgeloop.serving.admin import AdminGate
from edgeloop.serving.app import Server

T = TypeVar("T")


class Harness:
    """Synchronous, thread-safe access to an app running in a portal's event loop."""

    def __init__(self, portal: BlockingPortal, app: FastAPI) -> None:
        self.portal = portal
        self.server: Server = app.state.server
        self.catalog = self.server.catalog
        self.client: httpx.AsyncClient = portal.call(self._client, app)

    @staticmethod
    async def _client(app: FastAPI) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        return self.portal.call(fn, *args)

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.portal.call(lambda: self.client.get(url, **kwargs))

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.portal.call(lambda: self.client.post(url, **kwargs))

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self.portal.call(lambda: self.client.request(method, url, **kwargs))

    def infer(
        self, model: str, x: np.ndarray, *, version: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        """A JSON infer request for the single input ``input``."""
        return self.post(infer_url(model, version), json=json_request(x), **kwargs)

    def metrics(self) -> str:
        return self.get("/metrics").text


def infer_url(model: str, version: str | None = None) -> str:
    return f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"


def json_request(x: np.ndarray, name: str = "input", datatype: str = "FP32") -> dict[str, Any]:
    return {
        "inputs": [
            {"name": name, "shape": list(x.shape), "datatype": datatype, "data": x.ravel().tolist()}
        ]
    }


def binary_request(
    x: np.ndarray, *, binary_output: bool = True, name: str = "input"
) -> tuple[bytes, dict[str, str]]:
    """The body and headers tritonclient sends for one FP32 input with binary data."""
    doc: dict[str, Any] = {
        "inputs": [
            {
                "name": name,
                "shape": list(x.shape),
                "datatype": "FP32",
                "parameters": {"binary_data_size": x.nbytes},
            }
        ],
        "outputs": [{"name": "output", "parameters": {"binary_data": binary_output}}],
    }
    header = orjson.dumps(doc)
    return header + x.astype("<f4").tobytes(), {
        "Inference-Header-Content-Length": str(len(header)),
        "Content-Type": "application/octet-stream",
    }


@contextlib.contextmanager
def serving(
    paths: Sequence[Path],
    config: ServerConfig | None = None,
    name: str | None = None,
    pool: ModelPool | None = None,
    admin: AdminGate | None = None,
) -> Iterator[Harness]:
    """Start a catalog over ``paths`` (on ``pool``, or a new one) and the app; stop both
    afterwards."""
    config = config if config is not None else ServerConfig()
    with start_blocking_portal(backend="asyncio") as portal:
        catalog = Catalog(scan(list(paths), name), config, pool=pool)
        app = create_app(catalog, admin=admin)
        portal.call(catalog.start)
        harness = Harness(portal, app)
        try:
            yield harness
        finally:
            portal.call(harness.client.aclose)
            portal.call(harness.server.service.drain)
            portal.call(catalog.stop)


def image(seed: int = 0, batch: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 3, 32, 32)).astype(np.float32)
