"""Database URLs for the control-plane tests: SQLite always, PostgreSQL when
``EDGELOOP_TEST_POSTGRES_URL`` is set (a fresh schema per test, as tests/registry does)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.postgres import PG_PARAM, fresh_schema


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL on a fresh, empty schema (dropped afterwards)."""
    yield from fresh_schema("edgeloop_ctl")


@pytest.fixture(params=["sqlite", PG_PARAM])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """One database URL shared by several control-plane processes of a test."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.db'}"
    return str(request.getfixturevalue("pg_url"))
