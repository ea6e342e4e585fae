"""What only the SQL store has: SQLite pragmas, URL checks, error translation, processes."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from edgeloop.core.errors import ConfigError, StoreError
from edgeloop.core.types import Manifest, ModelRef
from edgeloop.registry import SqlModelStore


def _pragma(conn: sa.Connection, name: str) -> object:
    return conn.exec_driver_sql(f"PRAGMA {name}").scalar_one()


def test_sqlite_connections_run_in_wal_with_full_sync(sqlite_url: str, tmp_path: Path) -> None:
    store = SqlModelStore(sqlite_url)
    try:
        # synchronous is per connection: read it on the store's own pooled connections,
        # two of them open at once so the second is a fresh one from the pool.
        with store.engine.connect() as one, store.engine.connect() as two:
            for conn in (one, two):
                assert _pragma(conn, "journal_mode") == "wal"
                assert _pragma(conn, "synchronous") == 2  # FULL
                assert _pragma(conn, "foreign_keys") == 1
                assert _pragma(conn, "busy_timeout") == 30_000
    finally:
        store.close()
    # WAL is a property of the file: a plain sqlite3 connection sees it too.
    with sqlite3.connect(tmp_path / "registry.db") as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("not a url", "'not a url'"),
        ("mysql://user@localhost/db", "'mysql'"),
        ("postgres://user@localhost/db", "'postgres'"),
        ("postgresql+psycopg2://user@localhost/db", "'postgresql+psycopg2'"),
        ("sqlite://", "in-memory"),
        ("sqlite:///:memory:", "in-memory"),
    ],
)
def test_bad_url_is_a_config_error_naming_it(url: str, named: str) -> None:
    with pytest.raises(ConfigError) as info:
        SqlModelStore(url)
    assert named in info.value.message
    assert info.value.hint is not None
    assert "sqlite:///" in info.value.hint
    assert "postgresql+psycopg://" in info.value.hint


def test_unreachable_database_is_a_store_error_without_the_password() -> None:
    # Port 1 on loopback refuses at once; the default psycopg2 driver is replaced by psycopg 3.
    with pytest.raises(StoreError) as info:
        SqlModelStore("postgresql://reg:s3cret-pw@127.0.0.1:1/registry")
    message = str(info.value)
    assert "s3cret-pw" not in message
    assert "postgresql+psycopg://reg:***@127.0.0.1:1/registry" in message


def test_sqlite_file_in_a_missing_folder_is_a_store_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'no-such-dir' / 'registry.db'}"
    with pytest.raises(StoreError) as info:
        SqlModelStore(url)
    assert str(tmp_path / "no-such-dir") in info.value.message


def test_reopening_a_database_keeps_its_versions(
    sqlite_url: str, manifest: Callable[..., Manifest]
) -> None:
    m = manifest("a")
    first = SqlModelStore(sqlite_url)
    added = first.add(m, "a" * 64, 5)
    first.close()
    second = SqlModelStore(sqlite_url)
    try:
        assert second.get(ModelRef("a")) == added
        assert second.add(m, "a" * 64, 5).version == 2
    finally:
        second.close()


_WORKER = textwrap.dedent(
    """
    import sys
    from edgeloop.core.types import Manifest, TensorSpec
    from edgeloop.registry import SqlModelStore

    store = SqlModelStore(sys.argv[1])
    m = Manifest("m", "onnx", (TensorSpec("x", (1,)),), (TensorSpec("y", (1,)),))
    print(" ".join(str(store.add(m, "a" * 64, 1).version) for _ in range(int(sys.argv[2]))))
    """
)


@pytest.mark.parametrize("db", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_two_processes_on_one_database_get_distinct_versions(
    db: str, request: pytest.FixtureRequest
) -> None:
    url = str(request.getfixturevalue("sqlite_url" if db == "sqlite" else "pg_url"))
    SqlModelStore(url).close()  # create the tables, as the first process of a fleet would
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, url, "15"], stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    got = sorted(int(v) for out in outputs for v in out.split())
    assert got == list(range(1, 31))
