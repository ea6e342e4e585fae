"""An edge node may lack torch and scipy: monitoring never imports them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import edgeloop.monitoring

MONITORING_DIR = Path(edgeloop.monitoring.__file__).parent

SCRIPT = """
import sys
import numpy as np
from edgeloop.monitoring import DriftMonitor, MonitorConfig
rng = np.random.default_rng(0)
cfg = MonitorConfig(replicates=10, calibration_length=500, alarms_per_1000=0.1)
mon = DriftMonitor.fit(rng.normal(size=(50, 3)), rng.dirichlet(np.ones(2), 50), config=cfg)
mon = DriftMonitor.from_profile(mon.profile.to_bytes())
mon.update_many(rng.normal(size=(20, 3)), rng.dirichlet(np.ones(2), 20))
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"torch", "scipy", "sklearn"})
print(heavy)
"""


def test_monitoring_imports_neither_torch_nor_scipy() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_no_monitoring_module_mentions_a_torch_import() -> None:
    pattern = re.compile(r"^\s*(import|from)\s+(torch|scipy)\b|import_module\(\s*['\"]torch", re.M)
    offenders = [p.name for p in MONITORING_DIR.glob("*.py") if pattern.search(p.read_text())]
    assert offenders == []
