"""``Registry``: publish, resolve, remove, lineage over a real SQLite store and artifact folder."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.tiny_models import make_linear_onnx

from edgeloop.core.errors import (
    ConfigError,
    ConflictError,
    NotFoundError,
    StoreError,
    UntrustedArtifactError,
)
from edgeloop.core.settings import Settings
from edgeloop.core.types import Manifest, ModelRef
from edgeloop.registry import LocalArtifactStore, ModelVersion, Registry, SqlModelStore

ManifestFactory = Callable[..., Manifest]


@pytest.fixture
def registry(tmp_path: Path, sqlite_url: str) -> Iterator[Registry]:
    with Registry(SqlModelStore(sqlite_url), LocalArtifactStore(tmp_path / "artifacts")) as reg:
        yield reg


@pytest.fixture
def other_onnx(tmp_path: Path) -> Path:
    return make_linear_onnx(tmp_path / "other.onnx", seed=1)


def _artifact_files(registry: Registry) -> list[Path]:
    root = Path(getattr(registry.artifacts, "root"))  # noqa: B009 - LocalArtifactStore only
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def _fail_version_inserts(registry: Registry) -> None:
    """Make the database itself refuse new versions (a real failure, not a stand-in store)."""
    engine = registry.store.engine  # type: ignore[attr-defined]
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TRIGGER refuse BEFORE INSERT ON registry_versions "
            "BEGIN SELECT RAISE(ABORT, 'disk quota exceeded'); END"
        )


def _allow_version_inserts(registry: Registry) -> None:
    with registry.store.engine.begin() as conn:  # type: ignore[attr-defined]
        conn.exec_driver_sql("DROP TRIGGER refuse")


def test_publish_then_resolve_gives_verified_bytes(
    registry: Registry, manifest: ManifestFactory, linear_onnx: Path
) -> None:
    version = registry.publish(linear_onnx, manifest("lin"))
    assert version.ref == ModelRef("lin", 1)
    assert version.size_bytes == linear_onnx.stat().st_size
    got, path = registry.resolve(ModelRef("lin"))
    assert got == version
    assert path.read_bytes() == linear_onnx.read_bytes()
    assert _artifact_files(registry) == [path]


def test_same_bytes_are_stored_once_and_deleted_with_the_last_user(
    registry: Registry, manifest: ManifestFactory, linear_onnx: Path
) -> None:
    a = registry.publish(linear_onnx, manifest("a"))
    b = registry.publish(linear_onnx, manifest("b"))
    assert a.artifact_sha256 == b.artifact_sha256
    assert len(_artifact_files(registry)) == 1
    registry.remove(ModelRef("a", 1))
    assert registry.artifacts.exists(b.artifact_sha256)
    registry.remove(ModelRef("b", 1))
    assert _artifact_files(registry) == []


def test_failed_database_write_leaves_no_orphan_artifact(
    registry: Registry, manifest: ManifestFactory, linear_onnx: Path, other_onnx: Path
) -> None:
    kept = registry.publish(other_onnx, manifest("lin"))
    before_files, before_rows = _artifact_files(registry), registry.list()
    _fail_version_inserts(registry)
    with pytest.raises(StoreError, match="disk quota exceeded") as caught:
        registry.publish(linear_onnx, manifest("lin"))
    assert "registry.db" in caught.value.message  # names the database
    assert _artifact_files(registry) == before_files
    assert registry.list() == before_rows == [kept]
    _allow_version_inserts(registry)
    # The failed transaction did not consume a version number either.
    assert registry.publish(linear_onnx, manifest("lin")).version == 2


def test_a_version_published_elsewhere_keeps_its_number_or_leaves_nothing(
    registry: Registry, manifest: ManifestFactory, linear_onnx: Path, other_onnx: Path
) -> None:
    assert registry.publish(linear_onnx, manifest("lin"), version=3).ref == ModelRef("lin", 3)
    with pytest.raises(ConflictError, match="lin:2 cannot be registered"):
        registry.publish(other_onnx, manifest("lin"), version=2)
    assert [v.ref for v in registry.list()] == [ModelRef("lin", 3)]
    assert len(_artifact_files(registry)) == 1  # the refused upload's bytes are gone


def test_failed_publish_keeps_an_artifact_another_version_uses(
    registry: Registry, manifest: ManifestFactory, linear_onnx: Path
) -> None:
    kept = registry.publish(linear_onnx, manifest("a"))
    _fail_version_inserts(registry)
    with pytest.raises(StoreError):
        registry.publish(linear_onnx, manifest("b"))
    assert registry.resolve(kept.ref)[1].read_bytes() == linear_onnx.read_bytes()


def test_tampered_artifact_is_refused_and_state_is_unchanged(
    registry: Registry, manifest: ManifestFactory, linear_onnx: Path
) -> None:
    version = registry.publish(linear_onnx, manifest("lin"))
    _, path = registry.resolve(version.ref)
    path.chmod(0o600)
    path.write_bytes(path.read_bytes() + b"\x00")
    with pytest.raises(UntrustedArtifactError, match=version.artifact_sha256):
        registry.resolve(version.ref)
    assert registry.list() == [version]


def test_missing_artifact_says_to_publish_again(
    registry: Registry, manifest: ManifestFactory, linear_onnx: Path
) -> None:
    version = registry.publish(linear_onnx, manifest("lin"))
    registry.artifacts.delete(version.artifact_sha256)
    with pytest.raises(NotFoundError, match=version.artifact_sha256) as caught:
        registry.resolve(version.ref)
    assert caught.value.hint is not None and "publish" in caught.value.hint


def test_parent_is_pinned_to_its_latest_version_and_lineage_walks_to_the_root(
    registry: Registry, manifest: ManifestFactory, linear_onnx: Path, other_onnx: Path
) -> None:
    registry.publish(linear_onnx, manifest("fp32"))
    registry.publish(other_onnx, manifest("fp32"))
    int8 = registry.publish(linear_onnx, manifest("int8", parent=ModelRef("fp32")))
    assert int8.manifest.parent == ModelRef("fp32", 2)
    pruned = registry.publish(other_onnx, manifest("pruned", parent=int8.ref))
    chain = registry.lineage(pruned.ref)
    assert [str(v.ref) for v in chain] == ["pruned:1", "int8:1", "fp32:2"]


def test_missing_parent_is_refused_and_nothing_is_stored(
    registry: Registry, manifest: ManifestFactory, linear_onnx: Path
) -> None:
    with pytest.raises(NotFoundError) as caught:
        registry.publish(linear_onnx, manifest("int8", parent=ModelRef("fp32", 3)))
    assert "'fp32:3'" in caught.value.message
    assert registry.list() == []
    assert _artifact_files(registry) == []


def test_removing_a_parent_is_refused_while_children_exist(
    registry: Registry, manifest: ManifestFactory, linear_onnx: Path
) -> None:
    base = registry.publish(linear_onnx, manifest("base"))
    child = registry.publish(linear_onnx, manifest("child", parent=base.ref))
    with pytest.raises(ConflictError, match=r"'base:1'.*child:1"):
        registry.remove(base.ref)
    assert registry.list() == [base, child]
    registry.remove(child.ref)
    assert registry.remove(base.ref) == base


def test_remove_never_guesses_latest(
    registry: Registry, manifest: ManifestFactory, linear_onnx: Path
) -> None:
    registry.publish(linear_onnx, manifest("lin"))
    with pytest.raises(ConfigError, match="'lin' names none"):
        registry.remove(ModelRef("lin"))
    assert len(registry.list()) == 1


def test_concurrent_publishes_get_distinct_versions(
    registry: Registry, manifest: ManifestFactory, tmp_path: Path
) -> None:
    files = [make_linear_onnx(tmp_path / f"m{i}.onnx", seed=i) for i in range(6)]
    got: list[ModelVersion] = []
    start = threading.Barrier(len(files))

    def work(path: Path) -> None:
        start.wait()
        got.append(registry.publish(path, manifest("lin")))

    threads = [threading.Thread(target=work, args=(f,)) for f in files]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(v.version for v in got) == [1, 2, 3, 4, 5, 6]
    assert len(_artifact_files(registry)) == 6
    for version in got:
        registry.resolve(version.ref)  # every row points at intact bytes


def test_open_uses_the_home_folder(
    home: Path, manifest: ManifestFactory, linear_onnx: Path
) -> None:
    with Registry.open() as registry:
        version = registry.publish(linear_onnx, manifest("lin"))
    assert (home / "registry.db").is_file()
    stored = home / "artifacts" / version.artifact_sha256[:2] / version.artifact_sha256
    assert stored.is_file()
    with Registry.open(Settings.load(home)) as again:
        assert again.show(ModelRef("lin")) == version
