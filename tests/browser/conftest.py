"""Each dashboard test module gets its own fleet and Chromium (see ``launched``): a shared fleet
made the modules' results depend on which ran first on an xdist worker (a module that publishes
versions or sends reports changes what the next one sees), and a sync Playwright must not
outlive its module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.browser.dashboard_world import World, chromium, launched, world


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """A fleet with v1 rolled out and a Chromium of this module's own."""
    executable = chromium()  # skips with the reason before a fleet starts
    with world(tmp_path_factory.mktemp("ui-fleet")) as w, launched(executable) as browser:
        w.browser = browser
        yield w
