"""Fixtures of the registry tests: manifests, and store backends opened on one fresh database.

``store_factory`` is parametrised over every ``ModelStore`` backend; calling it twice gives two
handles on the same database (for the memory store the database is the object itself). The
PostgreSQL variant runs when ``EDGELOOP_TEST_POSTGRES_URL`` is set; each test gets a fresh
schema (selected through libpq's ``options=-csearch_path=...``) that is dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from edgeloop.core.types import Latency, Manifest, Measurement, ModelRef, Parity, TensorSpec
from edgeloop.registry import MemoryModelStore, ModelStore, SqlModelStore

PG_ENV = "EDGELOOP_TEST_POSTGRES_URL"
StoreFactory = Callable[[], ModelStore]
ManifestFactory = Callable[..., Manifest]

_PG = pytest.param(
    "postgres",
    marks=[
        pytest.mark.postgres,
        pytest.mark.skipif(not os.environ.get(PG_ENV), reason=f"{PG_ENV} is not set"),
    ],
)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh, empty schema (dropped afterwards)."""
    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip(f"{PG_ENV} is not set")
    schema = f"edgeloop_test_{uuid.uuid4().hex[:12]}"
    parsed = sa.make_url(base)
    if parsed.drivername == "postgresql":  # SQLAlchemy would pick psycopg2; we ship psycopg 3
        parsed = parsed.set(drivername="postgresql+psycopg")
    admin = sa.create_engine(parsed)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    url = parsed.update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'registry.db'}"


@pytest.fixture(params=["memory", "sqlite", _PG])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store_factory(backend: str, request: pytest.FixtureRequest) -> Iterator[StoreFactory]:
    opened: list[ModelStore] = []
    if backend == "memory":
        shared = MemoryModelStore()

        def make() -> ModelStore:
            return shared
    else:
        fixture = "sqlite_url" if backend == "sqlite" else "pg_url"
        url = str(request.getfixturevalue(fixture))

        def make() -> ModelStore:
            store = SqlModelStore(url)
            opened.append(store)
            return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(store_factory: StoreFactory) -> ModelStore:
    return store_factory()


@pytest.fixture
def manifest() -> ManifestFactory:
    """Build a valid manifest; keywords override fields."""

    def make(name: str = "lin", **fields: object) -> Manifest:
        base: dict[str, object] = {
            "name": name,
            "format": "onnx",
            "inputs": (TensorSpec("input", (None, 4)),),
            "outputs": (TensorSpec("output", (None, 3)),),
        }
        base.update(fields)
        return Manifest(**base)  # type: ignore[arg-type]

    return make


@pytest.fixture
def full_manifest(manifest: ManifestFactory) -> ManifestFactory:
    """A manifest with every optional part filled in, for round-trip tests.

    The figures are fixed test inputs for serialisation, not readings reported anywhere; they
    include a float that has no short decimal form to catch any lossy encoding.
    """

    def make(name: str = "lin", parent: ModelRef | None = None) -> Manifest:
        measurement = Measurement(
            model=name,
            engine="onnxruntime",
            provider="CPUExecutionProvider",
            batch_size=1,
            runs=50,
            latency_ms=Latency(0.1 + 0.2, 0.5, 1.25),
            throughput_per_s=1234.5,
            peak_rss_mb=None,
            size_bytes=275,
            accuracy=0.9375,
            accuracy_split="digits:test",
            power_w=None,
            power_source="no meter: RAPL not readable",
            cpu="x86_64",
            threads=1,
        )
        return manifest(
            name,
            source_data_hash="ab" * 32,
            dataset="digits",
            recipe={"arch": "mlp", "hidden": [32, 16], "optimizer": {"name": "adam", "lr": 1e-3}},
            parity=Parity(max_abs_diff=1.5e-7, top1_agreement=1.0, samples=360, split="test"),
            measurements=(measurement,),
            metrics={"test_accuracy": 0.9375},
            tools={"onnx": "1.17.0", "onnxruntime": "1.31.0"},
            parent=parent,
            labels=("zero", "one", "two"),
        )

    return make
