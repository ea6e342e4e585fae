"""The TUF update repository, checked by python-tuf's own client over real HTTP."""

from __future__ import annotations

import os
import stat
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tests.fleet_tuf import (
    TufServer,
    expired_timestamp,
    forge_targets,
    fresh_signer,
    make_repository,
    make_updater,
    mix_and_match,
    old_metadata,
    target_url_path,
)
from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import Metadata

from edgeloop.core.errors import ConfigError, NotFoundError
from edgeloop.registry.database import connect
from edgeloop.registry.update_repo import Expiry, UpdateRepository

DOC = b'{"schema": 1, "node_id": "n1", "revision": 1}'


def _download(server: TufServer, folder: Path, path: str) -> bytes:
    updater = make_updater(server, folder)
    updater.refresh()
    info = updater.get_targetinfo(path)
    assert info is not None, f"{path} is not a signed target"
    return Path(updater.download_target(info)).read_bytes()


def test_published_data_and_file_targets_download_and_verify(tmp_path: Path) -> None:
    repo = make_repository(tmp_path / "repo")
    artifact = tmp_path / "model.onnx"
    artifact.write_bytes(os.urandom(5000))
    first = repo.add_target("deployments/n1.json", data=DOC)
    second = repo.add_target("artifacts/lin-1.onnx", file=artifact)
    assert (second.targets, second.snapshot, second.timestamp) == (
        first.targets + 1,
        first.snapshot + 1,
        first.timestamp + 1,
    )
    root = Metadata.from_bytes(repo.root_bytes()).signed
    assert root.consistent_snapshot is True
    with TufServer(repo) as server:
        assert _download(server, tmp_path / "client", "deployments/n1.json") == DOC
        got = _download(server, tmp_path / "client", "artifacts/lin-1.onnx")
    assert got == artifact.read_bytes()


def test_tampered_target_bytes_are_rejected(tmp_path: Path) -> None:
    repo = make_repository(tmp_path / "repo")
    repo.add_target("deployments/n1.json", data=DOC)
    with TufServer(repo) as server:
        server.overrides[target_url_path(repo, "deployments/n1.json")] = DOC.replace(b"1}", b"9}")
        updater = make_updater(server, tmp_path / "client")
        updater.refresh()
        info = updater.get_targetinfo("deployments/n1.json")
        assert info is not None
        with pytest.raises(tuf_errors.LengthOrHashMismatchError):
            updater.download_target(info)
    assert not any((tmp_path / "client" / "targets").iterdir())


def test_expired_timestamp_is_a_freeze_and_rejected(tmp_path: Path) -> None:
    repo = make_repository(tmp_path / "repo")
    with TufServer(repo) as server:
        server.overrides["metadata/timestamp.json"] = expired_timestamp(repo)
        with pytest.raises(tuf_errors.ExpiredMetadataError):
            make_updater(server, tmp_path / "client").refresh()


def test_rollback_to_an_older_timestamp_is_rejected(tmp_path: Path) -> None:
    repo = make_repository(tmp_path / "repo")
    repo.add_target("deployments/n1.json", data=DOC)
    with TufServer(repo) as server:
        make_updater(server, tmp_path / "client").refresh()  # trusts timestamp v2
        server.overrides["metadata/timestamp.json"] = old_metadata(repo, "timestamp", 1)
        with pytest.raises(tuf_errors.BadVersionNumberError):
            make_updater(server, tmp_path / "client").refresh()


def test_mix_and_match_targets_is_rejected(tmp_path: Path) -> None:
    repo = make_repository(tmp_path / "repo")
    repo.add_target("deployments/n1.json", data=DOC)
    repo.add_target("deployments/n1.json", data=DOC + b" ")
    with TufServer(repo) as server:
        server.overrides.update(mix_and_match(repo, old_targets_version=2))
        with pytest.raises(tuf_errors.BadVersionNumberError):
            make_updater(server, tmp_path / "client").refresh()


def test_targets_signed_with_a_wrong_key_are_rejected(tmp_path: Path) -> None:
    repo = make_repository(tmp_path / "repo")
    repo.add_target("deployments/n1.json", data=DOC)
    with TufServer(repo) as server:
        evil = b'{"schema": 1, "node_id": "n1", "revision": 99}'
        server.overrides.update(forge_targets(repo, {"deployments/n1.json": evil}, fresh_signer()))
        with pytest.raises(tuf_errors.UnsignedMetadataError):
            make_updater(server, tmp_path / "client").refresh()


def test_concurrent_publishers_never_sign_two_files_with_one_version(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'repo.db'}"
    repos = [UpdateRepository.open(connect(url), tmp_path / "keys") for _ in range(2)]
    errors: list[BaseException] = []

    def publish(index: int) -> None:
        try:
            for i in range(5):
                repos[index].add_target(f"deployments/n{index}-{i}.json", data=b"%d" % i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=publish, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert repos[0].versions() == {"root": 1, "targets": 11, "snapshot": 11, "timestamp": 11}
    assert len(repos[1].targets()) == 10
    with TufServer(repos[1]) as server:
        assert _download(server, tmp_path / "client", "deployments/n0-4.json") == b"4"


def test_keys_are_private_and_must_match_the_stored_root(tmp_path: Path) -> None:
    repo = make_repository(tmp_path / "repo")
    for key in (tmp_path / "repo" / "keys").glob("*.pem"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    with pytest.raises(ConfigError, match="not the one the stored root trusts"):
        UpdateRepository.open(repo.db, tmp_path / "other-keys")


def test_unknown_metadata_names_and_paths_are_refused(tmp_path: Path) -> None:
    repo = make_repository(tmp_path / "repo")
    with pytest.raises(NotFoundError):
        repo.metadata("2.root.json")
    with pytest.raises(NotFoundError):
        repo.metadata("../registry.db")
    with pytest.raises(ConfigError, match="target path"):
        repo.add_target("../escape", data=b"x")


def test_refresh_resigns_what_is_about_to_expire(tmp_path: Path) -> None:
    repo = make_repository(tmp_path / "repo", Expiry(timestamp_s=60))
    assert repo.refresh() is None  # everything fresh
    later = datetime.now(UTC) + timedelta(seconds=45)
    published = repo.refresh(later)
    assert published is not None and published.timestamp == 2 and published.targets == 1
    with TufServer(repo) as server:
        make_updater(server, tmp_path / "client").refresh()
