"""The tier pieces against a real signed repository behind a real HTTP control plane stub:
the parent's cache (one upstream download for many requests, never poisoned, path-safe), the
children's authentication, and the settings' refusals. The whole tier (OS processes) is
tests/agent/test_tier.py."""

from __future__ import annotations

import asyncio
import hashlib
import re
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route
from tests.agent.conftest import Node
from tests.agent.fleet_stub import NODE_ID, NODE_TOKEN, ControlStub, publish
from tests.fleet_tuf import target_url_path

from edgeloop.agent.deployment import parse_deployment
from edgeloop.agent.fetcher import FetchSources, HttpxFetcher
from edgeloop.agent.tier import ChildService, TierSettings
from edgeloop.agent.tier_auth import ChildAuth, ChildRefusedError
from edgeloop.agent.tier_cache import TierCache, check_path
from edgeloop.agent.tuf_client import TufSession
from edgeloop.agent.update_state import Outcome
from edgeloop.core.errors import ConfigError, NotFoundError, UntrustedArtifactError

DATA = b"model bytes " * 1000


def _artifact(stub: ControlStub) -> str:
    """An artifact target published in the stub's repository; its path under the targets URL."""
    stub.repo.add_target("artifacts/lin-1.onnx", data=DATA)
    return target_url_path(stub.repo, "artifacts/lin-1.onnx").removeprefix("targets/")


def _cache(stub: ControlStub, tmp_path: Path, **kw: int) -> TierCache:
    return TierCache(tmp_path / "cache", lambda: (stub.targets_url, NODE_TOKEN), **kw)


def _requests_for(stub: ControlStub, path: str) -> int:
    return sum(1 for r in stub.requests if r.endswith(path))


def test_concurrent_misses_make_one_upstream_download(stub: ControlStub, tmp_path: Path) -> None:
    path = _artifact(stub)
    cache = _cache(stub, tmp_path)

    async def many() -> list[Path]:
        return await asyncio.gather(*(cache.get(path) for _ in range(8)))

    files = asyncio.run(many())
    assert len(set(files)) == 1 and files[0].read_bytes() == DATA
    assert _requests_for(stub, path) == 1
    assert (cache.counts.upstream_downloads, cache.counts.coalesced) == (1, 7)
    asyncio.run(cache.get(path))  # a hit: no request upstream
    assert _requests_for(stub, path) == 1 and cache.counts.hits == 1


def test_tampered_upstream_never_poisons_the_cache(stub: ControlStub, tmp_path: Path) -> None:
    path = _artifact(stub)
    stub.overrides[f"targets/{path}"] = DATA[:-4] + b"evil"
    cache = _cache(stub, tmp_path)
    with pytest.raises(UntrustedArtifactError, match="sha256"):
        asyncio.run(cache.get(path))
    assert list((tmp_path / "cache").iterdir()) == []  # nothing kept, no part left
    assert cache.counts.upstream_rejected == 1
    del stub.overrides[f"targets/{path}"]  # the upstream heals: the next request downloads
    assert asyncio.run(cache.get(path)).read_bytes() == DATA


def test_a_missing_target_is_not_found_and_not_cached(stub: ControlStub, tmp_path: Path) -> None:
    cache = _cache(stub, tmp_path)
    with pytest.raises(NotFoundError):
        asyncio.run(cache.get(f"artifacts/{'0' * 64}.nothing.onnx"))
    assert list((tmp_path / "cache").iterdir()) == []


@pytest.mark.parametrize(
    "path",
    [
        "artifacts/../deployments/node-1.json",
        f"artifacts/{'a' * 64}.x/../../identity.json",
        "/etc/passwd",
        f"deployments/{'a' * 64}.node-1.json",
        "artifacts/not-a-hash.onnx",
        f"artifacts/{'a' * 64}..",
        f"other/{'a' * 64}.x.onnx",
        "",
    ],
)
def test_path_traversal_and_other_paths_are_refused(path: str) -> None:
    with pytest.raises(ConfigError):
        check_path(path)


def test_over_the_cap_the_least_recently_served_file_goes(
    stub: ControlStub, tmp_path: Path
) -> None:
    paths = []
    for i in range(3):
        stub.repo.add_target(f"artifacts/m-{i}.onnx", data=DATA + bytes([i]))
        paths.append(target_url_path(stub.repo, f"artifacts/m-{i}.onnx").removeprefix("targets/"))
    cache = _cache(stub, tmp_path, max_bytes=2 * len(DATA) + 10)
    for path in paths:
        asyncio.run(cache.get(path))
    held = sorted(f.name for f in (tmp_path / "cache").iterdir())
    assert held == sorted(p.partition("/")[2] for p in paths[1:]) and cache.counts.evicted == 1


def _get(
    stub: ControlStub, tmp_path: Path, path: str, token: str, node: str, **extra: str
) -> httpx.Response:
    """``GET /tier/targets/{path}`` of a parent's route (the agent's own handler, in-process)."""

    async def go() -> httpx.Response:
        service = ChildService(_cache(stub, tmp_path), ChildAuth(lambda: stub.url))
        app = Starlette(routes=[Route("/tier/targets/{path:path}", service.target)])
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://parent") as client:
            headers = {"Authorization": f"Bearer {token}", "X-Edgeloop-Node": node, **extra}
            return await client.get(f"/tier/targets/{path}", headers=headers)

    return asyncio.run(go())


def test_a_child_with_a_wrong_token_gets_403_and_nothing(stub: ControlStub, tmp_path: Path) -> None:
    path = _artifact(stub)
    answer = _get(stub, tmp_path, path, "not-a-node-token", NODE_ID)
    assert answer.status_code == 403 and "does not accept this token" in answer.json()["error"]
    assert _requests_for(stub, path) == 0  # refused before any download


def test_a_node_id_that_would_change_the_url_is_refused(stub: ControlStub, tmp_path: Path) -> None:
    answer = _get(stub, tmp_path, _artifact(stub), NODE_TOKEN, "../../healthz")
    assert answer.status_code == 403
    assert not any("healthz" in r for r in stub.requests)


def test_an_enrolled_child_gets_the_bytes_with_range(stub: ControlStub, tmp_path: Path) -> None:
    path = _artifact(stub)
    answer = _get(stub, tmp_path, path, NODE_TOKEN, NODE_ID)
    assert answer.status_code == 200 and answer.content == DATA

    part = _get(stub, tmp_path, path, NODE_TOKEN, NODE_ID, Range="bytes=100-")
    assert part.status_code == 206 and part.content == DATA[100:]


def test_a_deployment_document_is_never_served_by_the_parent(
    stub: ControlStub, tmp_path: Path
) -> None:
    answer = _get(stub, tmp_path, f"deployments/{'a' * 64}.{NODE_ID}.json", NODE_TOKEN, NODE_ID)
    assert answer.status_code == 400 and "per-node" in answer.json()["error"]


def test_the_fetcher_asks_the_parent_only_for_artifacts(tmp_path: Path) -> None:
    base = "http://control/tuf/targets/"
    fetcher = HttpxFetcher("t", tmp_path, base, parent="http://gw:8000/")
    sha = hashlib.sha256(DATA).hexdigest()
    assert fetcher.parent_url(f"{base}artifacts/{sha}.lin-1.onnx") == (
        f"http://gw:8000/tier/targets/artifacts/{sha}.lin-1.onnx"
    )
    assert fetcher.parent_url(f"{base}deployments/{sha}.node-1.json") is None
    assert fetcher.parent_url("http://control/tuf/metadata/1.root.json") is None
    fetcher.close()


@pytest.mark.parametrize(
    ("parent", "cascade", "needle"),
    [
        ("ftp://gw", None, "not an http(s) URL"),
        (None, "0.8", "needs --parent"),
        ("http://gw:8000", "1.5", "outside [0, 1]"),
        ("http://gw:8000", "big@high", "not a threshold"),
    ],
)
def test_bad_tier_settings_say_what_to_write(parent: str | None, cascade: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(needle)):
        TierSettings.parse(parent, cascade, False, 64.0)


def test_the_cascade_goes_to_the_parents_model() -> None:
    tier = TierSettings.parse("http://gw:8000/", "big@0.8", False, 64.0)
    assert tier.cascade_url("lin") == "http://gw:8000/v2/models/big"
    same = TierSettings.parse("http://gw:8000", "0.8", False, 64.0)
    assert same.cascade_url("lin") == "http://gw:8000/v2/models/lin"


def test_refusals_are_child_refused_errors() -> None:
    auth = ChildAuth(lambda: None)
    with pytest.raises(ChildRefusedError):
        asyncio.run(auth.check(None, NODE_ID))
    with pytest.raises(ChildRefusedError):
        asyncio.run(auth.check("Basic abc", NODE_ID))


# -- the child's side: what a parent can and cannot do to an update ---------------------------


class _Parent:
    """A parent's ``/tier/targets/...`` on a real port, serving ``body(genuine bytes)``."""

    def __init__(self, genuine: bytes, mode: str) -> None:
        import http.server
        import threading

        self.requests: list[str] = []
        parent = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parent.requests.append(self.path)
                body = {"genuine": genuine, "tampered": genuine[:-8] + b"\x00" * 8,
                        "endless": genuine + b"x" * 4096}[mode]  # fmt: skip
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize(
    ("mode", "parent_n", "failed", "rejected", "control"),
    [
        ("genuine", 1, 0, 0, 0),
        ("tampered", 0, 0, 1, 1),
        ("endless", 0, 1, 0, 1),
        ("dead", 0, 1, 0, 1),
    ],
)
def test_a_parent_cannot_install_bytes_the_repository_did_not_sign(
    node: Node,
    models: dict[int, Path],
    mode: str,
    parent_n: int,
    failed: int,
    rejected: int,
    control: int,
) -> None:
    publish(node.stub.repo, models[1], 1, version=1)
    target = next(p for p in node.stub.repo.targets() if p.startswith("artifacts/"))
    artifact = target_url_path(node.stub.repo, target)
    genuine = node.stub.body(artifact)
    assert genuine is not None
    parent = _Parent(genuine, "genuine" if mode == "dead" else mode)
    url = "http://127.0.0.1:9" if mode == "dead" else parent.url  # port 9: nothing listens
    sources = FetchSources()
    fetcher = HttpxFetcher(NODE_TOKEN, node.home.downloads, node.stub.targets_url,
                           parent=url, node_id=NODE_ID, sources=sources)  # fmt: skip
    session = TufSession(node.home, node.stub.metadata_url, node.stub.targets_url, fetcher)
    try:
        document = session.document(f"deployments/{NODE_ID}.json")
        outcome = asyncio.run(
            node.updater.run(parse_deployment(document, NODE_ID), document, session)
        )
    finally:
        fetcher.close()
        parent.close()
    assert outcome is Outcome.COMMITTED
    active = node.active()
    assert active is not None and hashlib.sha256(active.file.read_bytes()).hexdigest() == (
        hashlib.sha256(genuine).hexdigest()
    )
    counts = (sources.parent, sources.parent_failed, sources.parent_rejected, sources.control)
    assert counts == (parent_n, failed, rejected, control), sources
    from_control = sum(1 for r in node.stub.requests if r.endswith(artifact.partition("/")[2]))
    assert from_control == control  # the control plane was asked only when the parent failed
    if mode != "dead":
        assert parent.requests == [f"/tier/{artifact}"]
    assert not list(node.home.downloads.glob("*.part"))
