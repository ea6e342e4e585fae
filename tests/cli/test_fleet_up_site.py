"""`edgeloop fleet up --site NAME --names a,b`: bad names are refused before any process starts."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from edgeloop.cli.app import app
from edgeloop.core.errors import ConfigError
from edgeloop.sdk.site import load_sites


def _up(folder: Path, *args: str) -> object:
    return CliRunner().invoke(app, ["fleet", "up", "--dir", str(folder), *args])


def test_repeated_or_unusable_node_names_start_nothing(home: Path, tmp_path: Path) -> None:
    for names in ("cam,cam", "control,gw", "../x,gw"):
        result = _up(tmp_path / "f", "--names", names, "--site", "s1")
        assert isinstance(result.exception, ConfigError), result.output  # type: ignore[attr-defined]
        assert "must be unique" in result.exception.message  # type: ignore[attr-defined]
    assert not (tmp_path / "f" / "fleet.json").exists() and load_sites() == {}


def test_a_bad_site_name_starts_nothing(home: Path, tmp_path: Path) -> None:
    result = _up(tmp_path / "f", "--names", "cam,gw", "--site", "no spaces")
    assert isinstance(result.exception, ConfigError), result.output  # type: ignore[attr-defined]
    assert "site name 'no spaces'" in result.exception.message  # type: ignore[attr-defined]
    assert not (tmp_path / "f" / "fleet.json").exists()
