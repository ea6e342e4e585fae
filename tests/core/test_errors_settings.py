from __future__ import annotations

from pathlib import Path

import pytest

from edgeloop.core import errors
from edgeloop.core.errors import EdgeError, MissingDependencyError, ParityError, require
from edgeloop.core.settings import Settings


def _all_error_classes() -> list[type[EdgeError]]:
    return [
        c
        for c in vars(errors).values()
        if isinstance(c, type) and issubclass(c, EdgeError) and c is not EdgeError
    ]


def test_every_error_has_a_distinct_exit_code_and_an_http_status() -> None:
    classes = [c for c in _all_error_classes() if c is not ParityError]
    codes = [c.exit_code for c in classes]
    assert len(codes) == len(set(codes))
    assert all(c.exit_code not in (0, 1) for c in classes)
    assert all(400 <= c.http_status < 600 for c in _all_error_classes())


def test_error_message_and_hint() -> None:
    exc = errors.ConfigError("bad value 'x'", hint="use 'y'")
    assert str(exc) == "bad value 'x'\n  hint: use 'y'"
    assert exc.to_dict() == {"error": "ConfigError", "message": "bad value 'x'", "hint": "use 'y'"}


def test_parity_error_carries_numbers() -> None:
    exc = ParityError("drift", max_abs_diff=0.5, top1_agreement=0.9, tolerance=1e-4)
    assert exc.to_dict()["max_abs_diff"] == 0.5
    assert isinstance(exc, errors.ConversionError)


def test_require_names_the_extra() -> None:
    with pytest.raises(MissingDependencyError) as info:
        require("no_such_module_edgeloop", "train", "Training")
    assert "edgeloop[train]" in str(info.value)
    assert require("json", "x", "y").dumps([1]) == "[1]"


def test_settings_home_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGELOOP_HOME", str(tmp_path / "from-env"))
    monkeypatch.delenv("EDGELOOP_DB", raising=False)
    assert Settings.load().home == (tmp_path / "from-env").resolve()
    flag = Settings.load(tmp_path / "from-flag")
    assert flag.home == (tmp_path / "from-flag").resolve()
    assert flag.db_url == f"sqlite:///{(tmp_path / 'from-flag').resolve() / 'registry.db'}"
    monkeypatch.delenv("EDGELOOP_HOME")
    assert Settings.load().home == (Path.home() / ".edgeloop").resolve()


def test_settings_rejects_a_file_as_home(tmp_path: Path) -> None:
    file = tmp_path / "afile"
    file.write_text("x")
    with pytest.raises(errors.ConfigError, match="afile"):
        Settings.load(file)


def test_settings_ensure_creates_folders(tmp_path: Path) -> None:
    s = Settings.load(tmp_path / "h").ensure()
    assert s.artifacts_dir.is_dir()
