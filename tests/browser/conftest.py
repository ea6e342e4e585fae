"""The dashboard test runs on one fleet and one Chromium (starting them takes most time)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.browser.dashboard_world import World, chromium, world


@pytest.fixture(scope="session")  # shared by the browser test files
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    executable = chromium()
    with world(tmp_path_factory.mktemp("ui-fleet"), executable) as w:
        yield w
