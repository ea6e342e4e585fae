"""Side files (a checkpoint's) on a real control plane process: stored and read back by sha256,
admin only."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
from tests.control.process import control_process, enroll

ADMIN = "artifacts-api-admin-token-0123456789abcdef"


def test_a_file_round_trips_by_sha256_and_a_node_token_gets_nothing(tmp_path: Path) -> None:
    admin = {"Authorization": f"Bearer {ADMIN}"}
    data = b"\x00torch weights\xff" * 1000
    sha = hashlib.sha256(data).hexdigest()
    with control_process(tmp_path / "home", None, admin_token=ADMIN) as proc:
        url = f"{proc.url}/api/v1/artifacts"
        grant = httpx.post(f"{proc.url}/api/v1/enrollment-tokens", json={}, headers=admin)
        node = {
            "Authorization": f"Bearer {enroll(proc.url, grant.json()['token'], 'n')['node_token']}"
        }
        assert httpx.post(url, headers=node, files={"file": ("model.pt", data)}).status_code == 403
        assert httpx.get(f"{url}/{sha}", headers=admin).status_code == 404  # nothing stored
        stored = httpx.post(url, headers=admin, files={"file": ("model.pt", data)})
        assert stored.status_code == 201
        assert stored.json() == {"sha256": sha, "size_bytes": len(data)}
        back = httpx.get(f"{url}/{sha}", headers=admin)
        assert back.status_code == 200 and back.content == data
        assert httpx.get(f"{url}/{sha}", headers=node).status_code == 403
        assert httpx.get(f"{url}/not-a-digest", headers=admin).status_code == 400
        two = {"file": ("a", data), "other": ("b", data)}
        assert httpx.post(url, headers=admin, files=two).status_code == 400
