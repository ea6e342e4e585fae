"""Fixtures for the edgeloop.data tests."""

from __future__ import annotations

import pytest
from tests.data.samples import make_images, make_signals

from edgeloop.data import Dataset


@pytest.fixture
def images() -> Dataset:
    return make_images()


@pytest.fixture
def signals() -> Dataset:
    return make_signals()
