"""The data set store: one contract for memory, SQLite and PostgreSQL; the library over it."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from tests.postgres import PG_PARAM

from edgeloop.core.errors import (
    ConfigError,
    ConflictError,
    DataError,
    NotFoundError,
    UntrustedArtifactError,
)
from edgeloop.data import Modality, load_data
from edgeloop.data.labels import Answer
from edgeloop.data.samples import UNLABELLED, SampleSet
from edgeloop.registry import LocalArtifactStore
from edgeloop.registry.dataset_library import DatasetLibrary
from edgeloop.registry.dataset_stores import MemoryDatasetStore, SqlDatasetStore
from edgeloop.registry.datasets import (
    DatasetEntry,
    DatasetRef,
    DatasetStore,
    Provenance,
)

StoreFactory = Callable[[], DatasetStore]
PROVENANCE = Provenance(
    node_ids=("node-1", "node-2"),
    model="digits-cnn:3",
    reasons=("uncertain", "drift"),
    time_range=(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, 12, tzinfo=UTC)),
    parents=(DatasetRef("digits-base", 1),),
)


def samples(seed: int = 0, labelled: int = 2) -> SampleSet:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(5, 3)).astype(np.float32)
    y = np.array([0, 1, 2, 1, 0], dtype=np.int64)
    y[labelled:] = UNLABELLED
    ids = tuple(f"req-{seed}-{i}" for i in range(5))
    return SampleSet(x, y, ids, ("a", "b", "c"), Modality.TABULAR)


def entry(name: str = "caps", digest: str = "ab" * 32) -> DatasetEntry:
    return DatasetEntry(
        name, digest, 100, 5, (3,), ("a", "b", "c"), Modality.TABULAR, 2, PROVENANCE
    )


@pytest.fixture(params=["memory", "sqlite", PG_PARAM])
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    opened: list[DatasetStore] = []
    if request.param == "memory":
        shared = MemoryDatasetStore()

        def make() -> DatasetStore:
            return shared
    else:
        fixture = "sqlite_url" if request.param == "sqlite" else "pg_url"
        url = str(request.getfixturevalue(fixture))

        def make() -> DatasetStore:
            store = SqlDatasetStore(url)
            opened.append(store)
            return store

    yield make
    for store in opened:
        store.close()


class TestDatasetStoreContract:
    def test_concurrent_writers_get_distinct_versions(self, store_factory: StoreFactory) -> None:
        digests = [f"{i:02x}" * 32 for i in range(8)]
        handles = [store_factory() for _ in range(4)]  # two handles share one database
        with ThreadPoolExecutor(max_workers=4) as pool:
            jobs = [pool.submit(handles[i % 4].add, entry(digest=d)) for i, d in enumerate(digests)]
            made = [job.result().version for job in jobs]
        assert sorted(made) == list(range(1, 9))
        assert len({v.entry.content_hash for v in store_factory().list("caps")}) == 8

    def test_versions_count_up_per_name(self, store_factory: StoreFactory) -> None:
        store = store_factory()
        assert store.add(entry()).version == 1
        assert store.add(entry(digest="cd" * 32)).version == 2
        assert store.add(entry("other")).version == 1
        assert [str(v.ref) for v in store.list()] == ["caps:1", "caps:2", "other:1"]
        assert [v.version for v in store.list("caps")] == [1, 2]

    def test_round_trip_through_a_second_handle(self, store_factory: StoreFactory) -> None:
        added = store_factory().add(entry())
        got = store_factory().get(DatasetRef("caps", 1))
        assert got == added
        assert got.entry.provenance == PROVENANCE
        assert got.to_dict()["unlabelled"] == 3
        assert store_factory().get(DatasetRef("caps")).version == 1

    def test_the_same_content_twice_is_refused(self, store_factory: StoreFactory) -> None:
        store = store_factory()
        store.add(entry())
        with pytest.raises(ConflictError, match="caps:1 already holds these samples"):
            store.add(entry())
        assert [v.version for v in store.list()] == [1]

    def test_missing_versions_name_what_exists(self, store_factory: StoreFactory) -> None:
        store = store_factory()
        store.add(entry())
        with pytest.raises(NotFoundError, match="'caps' has versions 1"):
            store.get(DatasetRef("caps", 7))
        with pytest.raises(NotFoundError, match="stored names: caps"):
            store.get(DatasetRef("nope"))


@pytest.fixture
def library(tmp_path: Path, sqlite_url: str) -> Iterator[DatasetLibrary]:
    with DatasetLibrary(SqlDatasetStore(sqlite_url), LocalArtifactStore(tmp_path / "art")) as lib:
        yield lib


def test_version_is_content_addressed(library: DatasetLibrary) -> None:
    v = library.add("caps", samples(), PROVENANCE)
    s = library.samples("caps:1")
    assert v.entry.content_hash == s.content_hash() == samples().content_hash()
    assert library.artifacts.verify(v.entry.content_hash).sha256 == v.entry.content_hash
    assert (v.entry.samples, v.entry.labelled, v.entry.sample_shape) == (5, 2, (3,))
    with pytest.raises(ConflictError):
        library.add("caps", samples())


def test_changed_artifact_is_refused(library: DatasetLibrary) -> None:
    v = library.add("caps", samples())
    path = library.artifacts.path(v.entry.content_hash)
    path.chmod(0o644)
    path.write_bytes(samples(seed=1).to_npz_bytes())
    with pytest.raises(UntrustedArtifactError, match="changed on disk"):
        library.samples("caps:1")


def test_labels_make_a_new_version_with_its_parent(library: DatasetLibrary) -> None:
    library.add("caps", samples(), PROVENANCE)
    answers = [Answer("t1", "req-0-2", ("c",)), Answer("t2", "req-0-0", ("b",))]
    done = library.label("caps:1", answers)
    assert (done.labels.applied, done.labels.conflicting) == (1, 1)
    new = done.version
    assert new is not None and str(new.ref) == "caps:2" and done.created
    assert new.entry.provenance.parents == (DatasetRef("caps", 1),)
    assert new.entry.provenance.model == "digits-cnn:3"
    assert (new.entry.labelled, library.get("caps:1").entry.labelled) == (3, 2)
    nothing = library.label("caps:2", [Answer("t", "req-0-2", ("c",))])
    assert nothing.version is None and nothing.labels.counts()["unchanged"] == 1
    # The same answers on caps:1 again: caps:2 already holds the result, nothing new is made.
    again = library.label("caps:1", answers)
    assert again.version == new and not again.created
    assert [str(v.ref) for v in library.list()] == ["caps:1", "caps:2"]


@pytest.mark.parametrize("suffix", [".npz", ".csv"])
def test_export_loads_back_identically(
    library: DatasetLibrary, tmp_path: Path, suffix: str
) -> None:
    library.add("caps", samples(labelled=4))
    out = tmp_path / f"caps{suffix}"
    _, written = library.export("caps:1", out)
    assert written == 4
    ds = load_data(out)
    want = samples(labelled=4)
    np.testing.assert_array_equal(ds.x, want.x[:4])
    assert [ds.classes[i] for i in ds.y] == [want.classes[i] for i in want.y[:4]]


def test_export_refuses_other_suffixes_and_empty_sets(
    library: DatasetLibrary, tmp_path: Path
) -> None:
    library.add("caps", samples(labelled=0))
    with pytest.raises(ConfigError, match="suffix must be one of .npz, .csv"):
        library.export("caps:1", tmp_path / "x.parquet")
    with pytest.raises(ConfigError, match="no labelled sample"):
        library.export("caps:1", tmp_path / "x.npz")
    assert not (tmp_path / "x.npz").exists()


def test_bad_refs_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="not a positive integer"):
        DatasetRef.parse("caps:0")
    with pytest.raises(ConfigError, match="not valid"):
        DatasetRef.parse("../x")


def test_provenance_survives_json() -> None:
    assert Provenance.from_dict(json.loads(json.dumps(PROVENANCE.to_dict()))) == PROVENANCE


def test_a_version_cannot_be_changed_in_place(library: DatasetLibrary) -> None:
    v = library.add("caps", samples())
    with pytest.raises(dataclasses.FrozenInstanceError):
        v.version = 2  # type: ignore[misc]
    assert not hasattr(library.store, "update") and not hasattr(library.store, "remove")


def test_an_empty_set_is_refused_and_leaves_nothing(library: DatasetLibrary) -> None:
    empty = SampleSet(
        np.zeros((0, 3), np.float32), np.zeros(0, np.int64), (), ("a",), Modality.TABULAR
    )
    with pytest.raises(DataError, match="no samples to store"):
        library.add("caps", empty)
    assert library.list() == []


def test_model_and_data_set_tables_share_one_database(sqlite_url: str, tmp_path: Path) -> None:
    from edgeloop.registry import SqlModelStore

    models = SqlModelStore(sqlite_url)
    try:
        store = SqlDatasetStore(sqlite_url)
        store.add(entry())
        assert models.list() == [] and len(store.list()) == 1
        store.close()
    finally:
        models.close()
