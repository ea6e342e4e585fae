"""``LocalArtifactStore``: content addressing, atomic idempotent writes, tamper detection."""

from __future__ import annotations

import hashlib
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from edgeloop.core.errors import ConfigError, NotFoundError, StoreError, UntrustedArtifactError
from edgeloop.registry import LocalArtifactStore


@pytest.fixture
def artifacts(tmp_path: Path) -> LocalArtifactStore:
    return LocalArtifactStore(tmp_path / "artifacts")


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _flip_first_byte(path: Path) -> None:
    path.chmod(stat.S_IRUSR | stat.S_IWUSR)
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    path.write_bytes(bytes(data))


def test_put_names_the_file_by_its_sha256(artifacts: LocalArtifactStore, linear_onnx: Path) -> None:
    expected = hashlib.sha256(linear_onnx.read_bytes()).hexdigest()
    info = artifacts.put(linear_onnx)
    assert info.sha256 == expected
    assert info.size_bytes == linear_onnx.stat().st_size
    stored = artifacts.path(expected)
    assert stored == artifacts.root / expected[:2] / expected
    assert stored.read_bytes() == linear_onnx.read_bytes()
    assert stat.S_IMODE(stored.stat().st_mode) & 0o222 == 0  # read-only: content never changes
    assert _files(artifacts.root) == [stored]  # no temp file left behind


def test_put_is_idempotent(artifacts: LocalArtifactStore, linear_onnx: Path) -> None:
    first = artifacts.put(linear_onnx)
    second = artifacts.put(linear_onnx)
    assert first == second
    assert len(_files(artifacts.root)) == 1


def test_put_again_repairs_a_damaged_copy(artifacts: LocalArtifactStore, linear_onnx: Path) -> None:
    info = artifacts.put(linear_onnx)
    _flip_first_byte(artifacts.path(info.sha256))
    artifacts.put(linear_onnx)
    assert artifacts.verify(info.sha256) == info


def test_verify_detects_tampering(artifacts: LocalArtifactStore, linear_onnx: Path) -> None:
    info = artifacts.put(linear_onnx)
    assert artifacts.verify(info.sha256) == info
    _flip_first_byte(artifacts.path(info.sha256))
    with pytest.raises(UntrustedArtifactError) as caught:
        artifacts.verify(info.sha256)
    assert info.sha256 in caught.value.message
    assert "hashes to" in caught.value.message


def test_missing_artifact(artifacts: LocalArtifactStore) -> None:
    sha = "0" * 64
    assert not artifacts.exists(sha)
    with pytest.raises(NotFoundError, match=sha):
        artifacts.path(sha)
    with pytest.raises(NotFoundError, match=sha):
        artifacts.verify(sha)


def test_delete_removes_once(artifacts: LocalArtifactStore, linear_onnx: Path) -> None:
    info = artifacts.put(linear_onnx)
    assert artifacts.delete(info.sha256) is True
    assert not artifacts.exists(info.sha256)
    assert artifacts.delete(info.sha256) is False


@pytest.mark.parametrize(
    "bad", ["../../etc/passwd", "/etc/passwd", "A" * 64, "a" * 63, "a" * 65, "z" * 64, ""]
)
@pytest.mark.parametrize("call", ["path", "exists", "delete", "verify"])
def test_bad_sha_is_refused_before_touching_disk(
    artifacts: LocalArtifactStore, bad: str, call: str
) -> None:
    method: Callable[[str], object] = getattr(artifacts, call)
    with pytest.raises(ConfigError) as caught:
        method(bad)
    assert repr(bad) in caught.value.message
    assert not artifacts.root.exists()


def test_put_missing_file(artifacts: LocalArtifactStore, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="nope.onnx"):
        artifacts.put(tmp_path / "nope.onnx")


def test_put_a_folder(artifacts: LocalArtifactStore, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a regular file"):
        artifacts.put(tmp_path)


def test_unwritable_root_is_a_store_error(tmp_path: Path, linear_onnx: Path) -> None:
    blocker = tmp_path / "is-a-file"
    blocker.write_text("x")
    with pytest.raises(StoreError) as caught:
        LocalArtifactStore(blocker).put(linear_onnx)
    assert str(blocker) in caught.value.message
