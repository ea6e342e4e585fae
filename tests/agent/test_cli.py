"""``edgeloop agent``: registered in the app, its flags, and a bad flag as an EdgeError."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from edgeloop.cli.app import app
from edgeloop.core.errors import ConfigError


def test_agent_command_is_registered_with_its_flags() -> None:
    result = CliRunner().invoke(app, ["agent", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for flag in ("--control", "--enroll-token", "--port", "--home", "--tuf-root", "--poll-s"):
        assert flag in result.output


def test_a_control_url_that_is_not_http_is_a_config_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["agent", "--control", "ftp://x", "--home", str(tmp_path), "--port", "0"]
    )
    assert isinstance(result.exception, ConfigError)
    assert "ftp://x" in result.exception.message and result.exception.exit_code == 2
