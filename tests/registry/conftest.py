"""Fixtures of the registry tests: manifests, and store backends opened on one fresh database.

``store_factory`` is parametrised over every ``ModelStore`` backend; calling it twice gives two
handles on the same database (for the memory store the database is the object itself). The
PostgreSQL variant runs when ``EDGELOOP_TEST_POSTGRES_URL`` is set; each test gets a fresh
schema (selected through libpq's ``options=-csearch_path=...``) that is dropped afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.postgres import PG_PARAM, fresh_schema

from edgeloop.core.types import Latency, Manifest, Measurement, ModelRef, Parity, TensorSpec
from edgeloop.registry import MemoryModelStore, ModelStore, SqlModelStore

StoreFactory = Callable[[], ModelStore]
ManifestFactory = Callable[..., Manifest]


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL on a fresh, empty schema (dropped afterwards)."""
    yield from fresh_schema("edgeloop_test")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'registry.db'}"


@pytest.fixture(params=["memory", "sqlite", PG_PARAM])
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
