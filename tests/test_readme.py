"""The README's Python example must run as printed (a README that lies is a bug)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"

pytest.importorskip("torch")


def _example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert blocks, "README.md has no python example"
    return str(blocks[0])


@pytest.mark.slow
def test_readme_example_runs(tmp_path: Path) -> None:
    env = {**os.environ, "EDGELOOP_HOME": str(tmp_path / "home")}
    done = subprocess.run(
        [sys.executable, "-c", _example()],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert re.search(r"accuracy 9\d\.\d\d%|accuracy 100\.00%", done.stdout), done.stdout
    assert "power None (" in done.stdout or re.search(r"power \d", done.stdout)
    assert "registered digits-cnn:1" in done.stdout
    assert (tmp_path / "cnn.onnx").is_file()
