"""The top-level command as a user runs it: a real process, real exit codes, clean streams."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from edgeloop import __version__

EDGELOOP = [sys.executable, "-m", "edgeloop.cli.app"]


def _run(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {"EDGELOOP_HOME": str(home), "PATH": "/usr/bin:/bin", "NO_COLOR": "1"}
    return subprocess.run(
        [*EDGELOOP, *args], capture_output=True, text=True, timeout=120, env=env, check=False
    )


def test_version(tmp_path: Path) -> None:
    done = _run("--version", home=tmp_path)
    assert done.returncode == 0
    assert done.stdout.strip() == f"edgeloop {__version__}"


def test_help_lists_every_stage_without_importing_torch() -> None:
    code = (
        "import sys; from typer.testing import CliRunner; from edgeloop.cli.app import app;"
        "r = CliRunner().invoke(app, ['--help']); print(r.output);"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    for command in ("data", "train", "export", "bench", "registry", "quickstart"):
        assert command in out
    assert out.strip().endswith("NO-TORCH")


def test_an_edge_error_is_a_message_and_its_exit_code_not_a_traceback(tmp_path: Path) -> None:
    done = _run("bench", str(tmp_path / "missing.onnx"), home=tmp_path)
    assert done.returncode == 4  # NotFoundError.exit_code
    assert "missing.onnx" in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


def test_bad_reference_names_the_value(tmp_path: Path) -> None:
    done = _run("registry", "show", "bad name:zero", home=tmp_path)
    assert done.returncode == 2  # ConfigError.exit_code
    assert "'zero'" in done.stderr and "Traceback" not in done.stderr


def test_usage_error_exit_code(tmp_path: Path) -> None:
    done = _run("bench", home=tmp_path)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr


def test_json_output_is_one_object_on_stdout(tmp_path: Path) -> None:
    done = _run("data", "list", "--format", "json", home=tmp_path)
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert isinstance(body, dict)
