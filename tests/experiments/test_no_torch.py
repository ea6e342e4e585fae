"""The experiment statistics are pure numpy: importing and using them pulls no torch or scipy."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import edgeloop.experiments

EXPERIMENTS_DIR = Path(edgeloop.experiments.__file__).parent

SCRIPT = """
import sys
from edgeloop.experiments import BernoulliSummary, ExperimentConfig, Metric, decide
from edgeloop.experiments import sample_size_per_arm
cfg = ExperimentConfig(Metric.ACCURACY, horizon_per_arm=1000)
arm = {Metric.ACCURACY: BernoulliSummary(90, 100)}
decide(cfg, arm, {Metric.ACCURACY: BernoulliSummary(95, 100)})
sample_size_per_arm(0.9, 0.92)
print(sorted({m.split(".")[0] for m in sys.modules} & {"torch", "scipy", "sklearn", "httpx"}))
"""


def test_experiments_import_neither_torch_nor_scipy() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_no_experiments_module_mentions_a_torch_or_scipy_import() -> None:
    pattern = re.compile(r"^\s*(import|from)\s+(torch|scipy)\b|import_module\(\s*['\"]torch", re.M)
    offenders = [p.name for p in EXPERIMENTS_DIR.glob("*.py") if pattern.search(p.read_text())]
    assert offenders == []
