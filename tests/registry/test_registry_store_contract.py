"""The ``ModelStore`` contract: one test class, run against every backend.

Backends: in-memory, SQLite (a temp file) and PostgreSQL (when EDGELOOP_TEST_POSTGRES_URL is
set). A new backend passes this class or it is not a ``ModelStore``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC

import pytest

from edgeloop.core.errors import ConfigError, ConflictError, NotFoundError
from edgeloop.core.types import Manifest, ModelRef
from edgeloop.registry import ModelStore, ModelVersion

ManifestFactory = Callable[..., Manifest]
StoreFactory = Callable[[], ModelStore]

SHA_A = "a" * 64
SHA_B = "b" * 64


def _add(store: ModelStore, manifest: ManifestFactory, name: str, sha: str = SHA_A) -> ModelVersion:
    return store.add(manifest(name), sha, 275)


class TestModelStoreContract:
    def test_versions_count_from_one_per_name(
        self, store: ModelStore, manifest: ManifestFactory
    ) -> None:
        got = [_add(store, manifest, n).ref for n in ("a", "a", "b", "a")]
        assert got == [ModelRef("a", 1), ModelRef("a", 2), ModelRef("b", 1), ModelRef("a", 3)]

    def test_get_without_version_is_the_latest(
        self, store: ModelStore, manifest: ManifestFactory
    ) -> None:
        _add(store, manifest, "a")
        second = _add(store, manifest, "a", SHA_B)
        assert store.get(ModelRef("a")) == second
        assert store.get(ModelRef("a", 1)).artifact_sha256 == SHA_A

    def test_missing_version_names_ref_and_known_versions(
        self, store: ModelStore, manifest: ManifestFactory
    ) -> None:
        _add(store, manifest, "a")
        _add(store, manifest, "a")
        with pytest.raises(NotFoundError) as info:
            store.get(ModelRef("a", 9))
        assert "'a:9'" in info.value.message
        assert "versions 1, 2" in info.value.message

    def test_missing_name_lists_known_names(
        self, store: ModelStore, manifest: ManifestFactory
    ) -> None:
        _add(store, manifest, "beta")
        _add(store, manifest, "alpha")
        with pytest.raises(NotFoundError) as info:
            store.get(ModelRef("gamma"))
        assert "'gamma'" in info.value.message
        assert "known names: alpha, beta" in info.value.message

    def test_empty_store_says_so(self, store: ModelStore) -> None:
        with pytest.raises(NotFoundError, match=r"'x'.*known names: \(none\)"):
            store.get(ModelRef("x"))

    def test_list_orders_by_name_then_version_and_filters(
        self, store: ModelStore, manifest: ManifestFactory
    ) -> None:
        for name in ("b", "a", "b", "a"):
            _add(store, manifest, name)
        assert [str(v.ref) for v in store.list()] == ["a:1", "a:2", "b:1", "b:2"]
        assert [str(v.ref) for v in store.list("b")] == ["b:1", "b:2"]
        assert store.list("nope") == []

    def test_manifest_round_trips_exactly(
        self, store: ModelStore, full_manifest: ManifestFactory
    ) -> None:
        base = store.add(full_manifest("base"), SHA_A, 100)
        child = store.add(full_manifest("child", parent=base.ref), SHA_B, 275)
        again = store.get(ModelRef("child", 1))
        assert again == child
        assert again.manifest == full_manifest("child", parent=ModelRef("base", 1))
        assert again.manifest.measurements[0].latency_ms.p50 == 0.1 + 0.2
        assert again.created_at.tzinfo is UTC

    def test_remove_returns_the_version_and_forgets_it(
        self, store: ModelStore, manifest: ManifestFactory
    ) -> None:
        first = _add(store, manifest, "a")
        second = _add(store, manifest, "a", SHA_B)
        assert store.remove(ModelRef("a", 2)) == second
        assert store.get(ModelRef("a")) == first
        with pytest.raises(NotFoundError, match=r"'a:2'.*versions 1"):
            store.get(ModelRef("a", 2))

    def test_removed_number_is_never_handed_out_again(
        self, store: ModelStore, manifest: ManifestFactory
    ) -> None:
        _add(store, manifest, "a")
        _add(store, manifest, "a")
        store.remove(ModelRef("a", 2))
        store.remove(ModelRef("a", 1))
        assert _add(store, manifest, "a").version == 3

    def test_an_explicit_version_is_kept_and_numbering_goes_on_from_it(
        self, store: ModelStore, manifest: ManifestFactory
    ) -> None:
        assert store.add(manifest("a"), SHA_A, 1, 3).ref == ModelRef("a", 3)
        assert store.add(manifest("b"), SHA_A, 1, 1).ref == ModelRef("b", 1)
        assert _add(store, manifest, "a").version == 4
        assert store.add(manifest("a"), SHA_B, 1, 7).version == 7
        assert [v.version for v in store.list("a")] == [3, 4, 7]

    def test_an_explicit_version_never_reuses_a_number(
        self, store: ModelStore, manifest: ManifestFactory
    ) -> None:
        _add(store, manifest, "a")
        _add(store, manifest, "a")
        store.remove(ModelRef("a", 2))
        for taken in (1, 2):  # present, and removed
            with pytest.raises(ConflictError, match=f"a:{taken} cannot be registered"):
                store.add(manifest("a"), SHA_B, 1, taken)
        assert [v.version for v in store.list("a")] == [1]
        assert _add(store, manifest, "a").version == 3

    def test_remove_needs_an_explicit_version(
        self, store: ModelStore, manifest: ManifestFactory
    ) -> None:
        _add(store, manifest, "a")
        with pytest.raises(ConfigError, match="'a' names none"):
            store.remove(ModelRef("a"))
        assert len(store.list()) == 1

    def test_remove_missing_version(self, store: ModelStore, manifest: ManifestFactory) -> None:
        _add(store, manifest, "a")
        with pytest.raises(NotFoundError, match=r"'a:5'.*versions 1"):
            store.remove(ModelRef("a", 5))

    def test_children_are_the_versions_derived_from_a_ref(
        self, store: ModelStore, manifest: ManifestFactory
    ) -> None:
        store.add(manifest("base"), SHA_A, 1)
        store.add(manifest("base"), SHA_A, 1)
        store.add(manifest("int8", parent=ModelRef("base", 1)), SHA_B, 1)
        store.add(manifest("fp16", parent=ModelRef("base", 1)), SHA_B, 1)
        store.add(manifest("int8", parent=ModelRef("base", 2)), SHA_B, 1)
        assert [str(v.ref) for v in store.children(ModelRef("base", 1))] == ["fp16:1", "int8:1"]
        # No version means the latest, as in get.
        assert [str(v.ref) for v in store.children(ModelRef("base"))] == ["int8:2"]
        assert store.children(ModelRef("int8", 2)) == []
        with pytest.raises(NotFoundError, match="'base:7'"):
            store.children(ModelRef("base", 7))

    def test_references_count_versions_sharing_an_artifact(
        self, store: ModelStore, manifest: ManifestFactory
    ) -> None:
        _add(store, manifest, "a", SHA_A)
        _add(store, manifest, "b", SHA_A)
        _add(store, manifest, "b", SHA_B)
        assert store.references(SHA_A) == 2
        store.remove(ModelRef("a", 1))
        assert store.references(SHA_A) == 1
        assert store.references("c" * 64) == 0

    @pytest.mark.parametrize("bad", ["../../etc/passwd", "A" * 64, "a" * 63, "g" * 64])
    def test_bad_sha_is_refused_and_nothing_is_stored(
        self, store: ModelStore, manifest: ManifestFactory, bad: str
    ) -> None:
        with pytest.raises(ConfigError) as info:
            store.add(manifest("a"), bad, 1)
        assert repr(bad) in info.value.message
        with pytest.raises(ConfigError, match="not a sha256"):
            store.references(bad)
        assert store.list() == []

    def test_negative_size_is_refused(self, store: ModelStore, manifest: ManifestFactory) -> None:
        with pytest.raises(ConfigError, match="-1"):
            store.add(manifest("a"), SHA_A, -1)
        assert store.list() == []
        assert store.add(manifest("a"), SHA_A, 0).version == 1

    def test_version_survives_the_dict_form(
        self, store: ModelStore, full_manifest: ManifestFactory
    ) -> None:
        added = store.add(full_manifest("a"), SHA_A, 10)
        assert ModelVersion.from_dict(json.loads(json.dumps(added.to_dict()))) == added

    def test_manifest_that_is_not_json_is_refused(
        self, store: ModelStore, manifest: ManifestFactory
    ) -> None:
        with pytest.raises(ConfigError, match="'a' cannot be stored as JSON"):
            store.add(manifest("a", metrics={"accuracy": float("nan")}), SHA_A, 1)
        with pytest.raises(ConfigError, match="'b' cannot be stored as JSON"):
            store.add(manifest("b", recipe={"optimizer": object()}), SHA_A, 1)
        assert store.list() == []

    def test_concurrent_adds_from_threads_get_distinct_versions(
        self, store: ModelStore, manifest: ManifestFactory
    ) -> None:
        got = _hammer([store] * 6, manifest, per_thread=5)
        assert sorted(got) == list(range(1, 31))

    def test_two_handles_on_one_database_behave_as_one(
        self, store_factory: StoreFactory, manifest: ManifestFactory
    ) -> None:
        first, second = store_factory(), store_factory()
        got = _hammer([first, second] * 3, manifest, per_thread=4)
        assert sorted(got) == list(range(1, 25))
        assert first.list() == second.list()
        second.remove(ModelRef("m", 24))
        assert first.get(ModelRef("m")).version == 23


def _hammer(stores: list[ModelStore], manifest: ManifestFactory, per_thread: int) -> list[int]:
    """Add versions of one name from one thread per entry of ``stores``, all at once."""
    got: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(len(stores))

    def work(store: ModelStore) -> None:
        try:
            start.wait()
            for _ in range(per_thread):
                version = store.add(manifest("m"), SHA_A, 1).version
                with lock:
                    got.append(version)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    return got
