"""`fleet up` hands no credential over a command line (issue 17, item 8): any user sees every
process's argv in `ps`; the enrollment token passed with `--enroll-token` was there. The agents
of a real local fleet get it through their environment, which only their owner can read."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeloop.cli.agent import _enroll_token
from edgeloop.core.errors import ConfigError
from edgeloop.sdk.control_client import ControlClient
from edgeloop.sdk.local_fleet import up


def _argv(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


def _environ(pid: int) -> dict[str, str]:
    pairs = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace").split("\0")
    return dict(p.split("=", 1) for p in pairs if "=" in p)


def test_fleet_processes_carry_no_token_in_their_argv(tmp_path: Path) -> None:
    with up(tmp_path / "fleet", 2) as fleet:
        with ControlClient(fleet.control.url, fleet.admin_token) as client:
            assert len(client.nodes()) == 2  # the agents enrolled with their env's token
        for proc in (fleet.control, *fleet.agents):
            argv = " ".join(_argv(proc.pid))
            assert "token" not in argv.lower(), argv
            assert fleet.admin_token not in argv
        tokens = [_environ(agent.pid)["EDGELOOP_ENROLL_TOKEN"] for agent in fleet.agents]
        assert len(set(tokens)) == 2  # one each, single-use
        for proc in (fleet.control, *fleet.agents):
            argv = " ".join(_argv(proc.pid))
            assert not any(token in argv for token in tokens)


def test_the_agent_reads_its_enrollment_token_from_a_file(tmp_path: Path) -> None:
    file = tmp_path / "enroll.token"
    file.write_text("tok-123\n")
    assert _enroll_token(None, file) == "tok-123"
    assert _enroll_token("from-env", None) == "from-env"
    with pytest.raises(ConfigError, match="both"):
        _enroll_token("from-env", file)
    with pytest.raises(ConfigError, match="cannot read"):
        _enroll_token(None, tmp_path / "missing")
