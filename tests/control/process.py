"""``edgeloop control`` as a real OS process on a free loopback port, and a python-tuf client
of it (ngclient with a fetcher that sends the node's bearer token)."""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from tuf.api.exceptions import DownloadHTTPError
from tuf.ngclient import Updater
from tuf.ngclient.fetcher import FetcherInterface

START_TIMEOUT_S = 90  # a cold interpreter importing the control plane on a loaded CI machine
HTTP_TIMEOUT_S = 30
STOP_TIMEOUT_S = 30


@dataclass
class ControlProcess:
    url: str
    proc: subprocess.Popen[bytes]
    ready: dict[str, Any]
    log: Path  # its stderr


@contextlib.contextmanager
def control_process(
    home: Path, db_url: str | None = None, *extra: str, admin_token: str | None = None
) -> Iterator[ControlProcess]:
    """Start ``edgeloop control --port 0 --format json`` and wait for its ready line.

    Its stderr goes to a file beside ``home`` (a pipe nobody reads would fill and stall it)."""
    cmd = [sys.executable, "-m", "edgeloop.cli.app", "control", "--port", "0", "--home",
           str(home), "--format", "json", *extra]  # fmt: skip
    if db_url:
        cmd += ["--db", db_url]
    env = {k: v for k, v in os.environ.items() if k not in ("EDGELOOP_DB", "EDGELOOP_HOME")}
    if admin_token:
        env["EDGELOOP_ADMIN_TOKEN"] = admin_token
    home.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f"{home.name}-control-", suffix=".log", dir=home.parent)
    os.close(fd)
    log = Path(name)
    with log.open("wb") as stderr:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, env=env)
    try:
        ready = _ready_line(proc, log)
        yield ControlProcess(ready["url"], proc, ready, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


def _ready_line(proc: subprocess.Popen[bytes], log: Path) -> dict[str, Any]:
    assert proc.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if selector.select(timeout=0.2):
            line = proc.stdout.readline()
            if line:
                selector.close()
                return dict(json.loads(line))
        if proc.poll() is not None:
            break
    selector.close()
    proc.kill()
    proc.wait()
    tail = log.read_text(errors="replace")[-2000:]
    raise AssertionError(f"edgeloop control did not start within {START_TIMEOUT_S} s: {tail}")


class BearerFetcher(FetcherInterface):
    """ngclient's downloads over httpx with ``Authorization: Bearer <token>``."""

    def __init__(self, token: str) -> None:
        self._http = httpx.Client(
            headers={"Authorization": f"Bearer {token}"}, timeout=HTTP_TIMEOUT_S
        )

    def _fetch(self, url: str) -> Iterator[bytes]:
        response = self._http.get(url)
        if response.status_code != 200:
            raise DownloadHTTPError(f"{url}: {response.status_code}", response.status_code)
        yield response.content

    def close(self) -> None:
        self._http.close()


@contextlib.contextmanager
def tuf_updater(enroll_answer: dict[str, Any], token: str, folder: Path) -> Iterator[Updater]:
    """A python-tuf client bootstrapped from the root in an enrollment answer."""
    tuf = enroll_answer["tuf"]
    (folder / "metadata").mkdir(parents=True, exist_ok=True)
    (folder / "targets").mkdir(parents=True, exist_ok=True)
    fetcher = BearerFetcher(token)
    try:
        yield Updater(
            str(folder / "metadata"),
            tuf["metadata_url"],
            str(folder / "targets"),
            tuf["targets_url"],
            fetcher=fetcher,
            bootstrap=json.dumps(tuf["root"]).encode(),
        )
    finally:
        fetcher.close()


def enroll(url: str, token: str, name: str, labels_note: str = "") -> dict[str, Any]:
    body = {"enrollment_token": token, "name": name,
            "capabilities": {"arch": "x86_64", "accelerators": []}, "agent_url": None}  # fmt: skip
    response = httpx.post(f"{url}/api/v1/enroll", json=body, timeout=HTTP_TIMEOUT_S)
    assert response.status_code == 201, response.text
    return dict(response.json())


def report(url: str, answer: dict[str, Any], doc: dict[str, Any]) -> None:
    """Report serving the document's model (what a healthy agent reports)."""
    model = doc["models"][0]
    body = {
        "revision": doc["revision"],
        "updater": {"state": "IDLE", "target_revision": None, "error": None},
        "active": {k: model[k] for k in ("name", "version", "variant", "sha256")},
        "self_test": {"passed": True, "max_abs_diff": 0.0, "at": "now"},
        "health": None,
        "events": [],
    }
    headers = {"Authorization": f"Bearer {answer['node_token']}"}
    url = f"{url}/api/v1/nodes/{answer['node_id']}/report"
    response = httpx.post(url, json=body, headers=headers, timeout=HTTP_TIMEOUT_S)
    assert response.status_code == 204, response.text
