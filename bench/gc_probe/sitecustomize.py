"""A probe of the garbage collector's pauses in the control-plane process (docs/benchmarks.md
"Fleet scale", "GC pauses"). Python imports ``sitecustomize`` at start-up from ``PYTHONPATH``:

    GC_PROBE_DIR=/tmp/gc PYTHONPATH=bench/gc_probe .venv/bin/python bench/fleet_scale.py ...

In a process whose command line has an argument containing ``GC_PROBE_MATCH`` (default
``control``: the control plane; ``.onnx`` picks an ``edgeloop serve`` of a model file), every
generation-2 collection and every
collection longer than 5 ms is written to ``$GC_PROBE_DIR/gc-<pid>.log`` (wall time, generation,
duration, objects collected, objects then tracked). ``GC_PROBE_NO_FREEZE=1`` turns
``gc.freeze`` into a no-op there, for the side-by-side without ``edgeloop.core.heap``.
"""

from __future__ import annotations

import gc
import os
import sys
import time
from pathlib import Path
from typing import Any

_folder = os.environ.get("GC_PROBE_DIR")
_match = os.environ.get("GC_PROBE_MATCH", "control")
if _folder and any(_match in arg for arg in sys.argv):
    _log = (Path(_folder) / f"gc-{os.getpid()}.log").open("a", buffering=1)
    _start: list[float] = [0.0]

    def _probe(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            _start[0] = time.perf_counter()
            return
        took = time.perf_counter() - _start[0]
        generation = info["generation"]
        if generation == 2 or took > 0.005:
            tracked = len(gc.get_objects()) if generation == 2 else -1
            _log.write(f"{time.time():.3f} gen{generation} {took * 1000:.1f}ms "
                       f"collected={info['collected']} objs={tracked}\n")  # fmt: skip

    gc.callbacks.append(_probe)
    if os.environ.get("GC_PROBE_NO_FREEZE"):
        gc.freeze = lambda: None
