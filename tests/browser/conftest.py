"""The dashboard tests share one fleet per test process (starting it takes most time); each
test module launches its own Chromium, closed when the module ends (see ``launched``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.browser.dashboard_world import World, chromium, launched, world


@pytest.fixture(scope="session")  # the fleet, shared by the browser test files
def ui_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    chromium()  # skips with the reason before a fleet starts
    with world(tmp_path_factory.mktemp("ui-fleet")) as w:
        yield w


@pytest.fixture(scope="module")
def running(ui_fleet: World) -> Iterator[World]:
    """The shared fleet with a Chromium of this module's own."""
    with launched(chromium()) as browser:
        ui_fleet.browser, ui_fleet._admin = browser, None
        try:
            yield ui_fleet
        finally:
            ui_fleet.browser, ui_fleet._admin = None, None
