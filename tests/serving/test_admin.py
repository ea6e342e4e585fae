"""Who may change what a server serves (issue 17 item 1): open by default for ``edgeloop
serve``, token-guarded with ``EDGELOOP_SERVE_ADMIN_TOKEN``, closed on an agent."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from tests.serving.harness import serving
from tests.serving.test_serve_process import _ready_info

from edgeloop.core.errors import ConfigError
from edgeloop.serving.admin import ADMIN_ENV, AdminGate

TOKEN = "t" * 20 + "-admin"
ROW = np.zeros((1, 4), dtype=np.float32)
CHANGES = [
    ("POST", "/v2/repository/models/linear/unload", None),
    ("POST", "/v2/repository/models/linear/load", None),
    ("PUT", "/v2/models/linear/power-budget", {"watts": 1.0}),
]


def test_token_gate_refuses_without_or_with_a_wrong_token(linear: Path) -> None:
    with serving([linear], admin=AdminGate(token=TOKEN)) as s:
        for method, path, body in CHANGES:
            none = s.request(method, path, json=body)
            assert none.status_code == 401, none.text
            assert none.json()["type"] == "UnauthorizedError"
            bad = {"Authorization": "Bearer " + "w" * 26}
            wrong = s.request(method, path, json=body, headers=bad)
            assert wrong.status_code == 403 and wrong.json()["type"] == "ForbiddenError"
        assert s.infer("linear", ROW).status_code == 200  # nothing was unloaded
        ok = s.post(
            "/v2/repository/models/linear/unload", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert ok.status_code == 200 and ok.json()["retired"] == ["1"]
        assert s.infer("linear", ROW).status_code == 503


def test_closed_gate_refuses_even_a_token_and_hides_the_extension(linear: Path) -> None:
    with serving([linear], admin=AdminGate.closed("managed elsewhere")) as s:
        r = s.post(
            "/v2/repository/models/linear/unload", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert r.status_code == 403 and "managed elsewhere" in r.json()["error"]
        assert s.get("/v2").json()["extensions"] == ["binary_tensor_data"]
        assert s.infer("linear", ROW).status_code == 200


def test_open_gate_is_the_default(linear: Path) -> None:
    with serving([linear]) as s:
        assert "model_repository" in s.get("/v2").json()["extensions"]
        assert s.post("/v2/repository/models/linear/load").status_code == 200


def test_a_short_token_is_refused() -> None:
    with pytest.raises(ConfigError, match="the admin token has 5 characters; at least 16"):
        AdminGate(token="short")


def test_edgeloop_serve_reads_the_admin_token_from_the_environment(linear: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", ADMIN_ENV: TOKEN}
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgeloop.cli.serve", str(linear), "--port", "0",
         "--format", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        url = _ready_info(proc)["url"]
        with httpx.Client(base_url=url, timeout=10) as client:
            assert client.post("/v2/repository/models/linear/unload").status_code == 401
            auth = {"Authorization": f"Bearer {TOKEN}"}
            assert client.post("/v2/repository/models/linear/load", headers=auth).status_code == 200
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
