"""The runtime must work where torch is not installed: it never imports it, even lazily."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import edgeloop.runtime

RUNTIME_DIR = Path(edgeloop.runtime.__file__).parent

SCRIPT = """
import asyncio, sys
import numpy as np
import edgeloop.runtime as rt
from edgeloop.runtime import adaptive, batcher, cascade, engine, engines, memory, pool
path = sys.argv[1]
p = rt.ModelPool(memory_budget_mb=512)
key = rt.ModelKey("linear", "1")
p.register(key, path)
with p.acquire(key) as model:
    model.run({"input": np.ones((1, 4), np.float32)})

async def serve():
    b = rt.DynamicBatcher(p.runner(key), max_batch=4, max_delay_ms=1, max_queue=8)
    await b.start()
    await b.submit({"input": np.ones((2, 4), np.float32)})
    await b.stop()

asyncio.run(serve())
print("torch" in sys.modules, sorted(m for m in sys.modules if m.split(".")[0] == "torch")[:3])
"""


def test_using_the_runtime_never_imports_torch(linear_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(linear_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False []"


def test_no_runtime_module_mentions_a_torch_import() -> None:
    pattern = re.compile(r"^\s*(import|from)\s+torch\b|import_module\(\s*['\"]torch", re.M)
    offenders = [p.name for p in RUNTIME_DIR.glob("*.py") if pattern.search(p.read_text())]
    assert offenders == []
