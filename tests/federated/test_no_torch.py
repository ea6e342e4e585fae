"""The agent imports edgeloop.federated's client parts and must run without torch."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import edgeloop.federated

FEDERATED_DIR = Path(edgeloop.federated.__file__).parent

SCRIPT = """
import sys
import numpy as np
import edgeloop.federated as fl
from edgeloop.federated import accountant, convergence, dp, selection, secagg
from edgeloop.federated.secagg import FixedPoint, run_round
u = fl.ClientUpdate("a", 1, 3, np.ones(4))
fl.FedAvg().aggregate(np.zeros(4), [u], fl.ServerState())
run_round({i: FixedPoint().encode(np.ones(4), 3) for i in (1, 2, 3)}, 2)
print("torch" in sys.modules, sorted(m for m in sys.modules if m.split(".")[0] == "torch")[:3])
"""


def test_using_edgeloop_federated_never_imports_torch() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False []"


def test_no_federated_module_mentions_a_torch_import() -> None:
    pattern = re.compile(r"^\s*(import|from)\s+torch\b|import_module\(\s*['\"]torch", re.M)
    offenders = [p.name for p in FEDERATED_DIR.rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []
