"""A running local fleet (real control plane, real agents) and Debian's Chromium, for the
dashboard's browser tests.

No browser is downloaded: Playwright drives the ``chromium`` on PATH (Debian's package; `.ci/run`
installs it). Without it the tests skip with that reason.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.tiny_models import make_linear_onnx

from edgeloop.control.ui.credentials import READONLY_ENV
from edgeloop.core.types import Manifest, TensorSpec
from edgeloop.sdk.local_fleet import LocalFleet, up

# The pages' screenshots: docs/ui/ (what docs/ui.md shows) only when asked for, so that
# `make test` leaves the tree as it found it: EDGELOOP_UI_SHOTS=docs/ui pytest tests/browser
SHOTS = Path(os.environ.get("EDGELOOP_UI_SHOTS") or Path(tempfile.gettempdir()) / "edgeloop-ui")
FEATURES, CLASSES = 4, 3
READER_TOKEN = "reader-" + "r" * 32  # the fleet's read-only token (EDGELOOP_READONLY_TOKEN)


def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.skip(
            "Debian's chromium is not installed (apt-get install -y chromium; .ci/run does)"
        )
    with contextlib.suppress(ImportError):
        import playwright  # noqa: F401

        return path
    pytest.skip("playwright is not installed (the dev extra has it)")


def manifest(name: str) -> Manifest:
    return Manifest(
        name=name,
        format="onnx",
        inputs=(TensorSpec("input", (None, FEATURES), "float32"),),
        outputs=(TensorSpec("output", (None, CLASSES), "float32"),),
    )


@dataclass
class World:
    fleet: LocalFleet
    v1: dict[str, Any]
    v2: dict[str, Any]
    first_rollout: str
    browser: Any  # playwright's Browser
    _admin: Any = None  # the shared admin BrowserContext

    @property
    def url(self) -> str:
        return self.fleet.control_url

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.fleet.folder / "control" / "registry.db", timeout=30)

    def admin_context(self) -> Any:
        """One admin sign-in shared by the steps (signing in costs a page load or two)."""
        if self._admin is None:
            self._admin, first = self.sign_in(self.fleet.admin_token)
            first.close()
        return self._admin

    def admin_page(self) -> Any:
        """A new page of the shared admin sign-in, on the fleet page."""
        page = self.admin_context().new_page()
        page.goto(f"{self.url}/ui/fleet")
        return page

    def sign_in(self, token: str) -> tuple[Any, Any]:
        """A fresh browser context signed in with ``token``, and its page (on the fleet page)."""
        context = self.browser.new_context(viewport={"width": 1280, "height": 800})
        page = context.new_page()
        page.goto(f"{self.url}/ui/fleet")
        page.get_by_label("Access token").fill(token)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(re.compile(r".*/ui/fleet$"))
        return context, page


def active_sha(node: dict[str, Any]) -> str | None:
    return ((node.get("reported") or {}).get("active") or {}).get("sha256")


@contextlib.contextmanager
def launched(executable: str) -> Iterator[Any]:
    """Chromium through Playwright's sync API, for one test module at most.

    While a sync Playwright runs, its event loop is this thread's running loop, so every
    ``asyncio.run()`` in the process fails ("cannot be called from a running event loop") and a
    second ``sync_playwright()`` refuses to start: it must not outlive its module (pytest-xdist
    runs other directories' tests in the same process afterwards).
    """
    from playwright.sync_api import sync_playwright

    args = ["--no-sandbox"] if os.geteuid() == 0 else []  # Chromium refuses root otherwise
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=args)
        try:
            yield browser
        finally:
            browser.close()


@contextlib.contextmanager
def world(folder: Path) -> Iterator[World]:
    """The fleet with v1 rolled out; its ``browser`` is None until a module launches one."""
    env = {READONLY_ENV: READER_TOKEN}
    with (
        up(folder, 2, agent_args=["--poll-s", "0.5", "--metrics-every-s", "1"], env=env) as fleet,
        fleet.admin() as admin,
    ):
        v1 = admin.publish_model(make_linear_onnx(folder / "v1.onnx", seed=1), manifest("lin"))
        v2 = admin.publish_model(make_linear_onnx(folder / "v2.onnx", seed=2), manifest("lin"))
        plan = {"waves": ["100%"], "soak_s": 0, "watch_s": 0, "wave_timeout_s": 120}
        first = admin.deploy({"name": "lin-prod", "model": v1["ref"], "plan": plan})
        done = admin.wait_rollout(first["rollout_id"], {"COMPLETED", "HALTED", "ROLLED_BACK"}, 120)
        assert done["state"] == "COMPLETED", done["events"][-3:]
        yield World(fleet, v1, v2, first["rollout_id"], None)
