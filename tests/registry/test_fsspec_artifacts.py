"""``FsspecArtifactStore``: the artifact store at a URL (fsspec's local and memory filesystems).

A bucket stands in for nothing here: ``file://`` is fsspec's local filesystem and ``memory://`` its
in-process one, the same code paths an s3:// or gs:// URL takes through fsspec.
"""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import pytest

from edgeloop.core.errors import ConfigError, NotFoundError, UntrustedArtifactError
from edgeloop.core.settings import Settings
from edgeloop.core.types import Manifest
from edgeloop.formats.onnx_info import inspect_onnx
from edgeloop.registry import Registry
from edgeloop.registry.fsspec_artifacts import FsspecArtifactStore

pytest.importorskip("fsspec")


@pytest.fixture(params=["file", "memory"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "file":
        return f"file://{tmp_path / 'bucket'}"
    return f"memory://edgeloop-test-{uuid.uuid4().hex}"


def test_put_then_a_fresh_cache_downloads_and_verifies(
    url: str, tmp_path: Path, linear_onnx: Path
) -> None:
    sha = hashlib.sha256(linear_onnx.read_bytes()).hexdigest()
    info = FsspecArtifactStore(url, tmp_path / "cache-a").put(linear_onnx)
    assert info.sha256 == sha and info.size_bytes == linear_onnx.stat().st_size
    reader = FsspecArtifactStore(url, tmp_path / "cache-b")  # another replica, empty cache
    assert reader.exists(sha)
    local = reader.path(sha)
    assert local.read_bytes() == linear_onnx.read_bytes()
    assert local.is_relative_to(tmp_path / "cache-b")
    assert not [p for p in reader.fs.find(reader.root) if ".tmp-" in p]  # no partial objects


def test_tampered_bytes_in_the_store_are_refused(
    url: str, tmp_path: Path, linear_onnx: Path
) -> None:
    store = FsspecArtifactStore(url, tmp_path / "cache-a")
    sha = store.put(linear_onnx).sha256
    with store.fs.open(store._location(sha), "wb") as fh:
        fh.write(b"not the model")
    reader = FsspecArtifactStore(url, tmp_path / "cache-b")
    with pytest.raises(UntrustedArtifactError, match="hashes to"):
        reader.path(sha)
    assert not reader.cache.exists(sha)  # nothing unverified is left in the cache
    with pytest.raises(UntrustedArtifactError):
        store.verify(sha)


def test_missing_and_deleted(url: str, tmp_path: Path, linear_onnx: Path) -> None:
    store = FsspecArtifactStore(url, tmp_path / "cache")
    with pytest.raises(NotFoundError, match="is not in"):
        store.path("a" * 64)
    sha = store.put(linear_onnx).sha256
    assert store.delete(sha) is True and not store.exists(sha)
    assert store.delete(sha) is False
    with pytest.raises(ConfigError):
        store.exists("not-a-digest")


def test_an_unknown_protocol_names_the_url(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nosuchfs://x"):
        FsspecArtifactStore("nosuchfs://x", tmp_path / "cache")


def test_the_registry_publishes_into_the_store_the_settings_name(
    tmp_path: Path, linear_onnx: Path
) -> None:
    url = f"file://{tmp_path / 'bucket'}"
    settings = Settings.load(tmp_path / "home", artifacts_url=url)
    info = inspect_onnx(linear_onnx)
    with Registry.open(settings) as registry:
        version = registry.publish(linear_onnx, Manifest("lin", "onnx", info.inputs, info.outputs))
        _, path = registry.resolve(version.ref)
    sha = version.artifact_sha256
    assert (tmp_path / "bucket" / sha[:2] / sha).read_bytes() == linear_onnx.read_bytes()
    assert path.read_bytes() == linear_onnx.read_bytes()
    assert not (tmp_path / "home" / "artifacts" / sha[:2]).exists()
