"""The garbage collector in long-running processes: what start-up built stays out of its scans.

A server imports its libraries and builds its app once; those objects (around 100,000 in the
control plane) live until exit, yet CPython's full (generation-2) collection walks every one of
them each time it runs. Under the fleet-scale load that is a pause of 65 to 99 ms every few
seconds on the event loop, which every request waiting at that moment pays (docs/benchmarks.md
"Fleet scale", "GC pauses"). :func:`freeze_startup` collects once and moves everything alive to
the permanent generation, so later collections walk only what was allocated since.
"""

from __future__ import annotations

import gc


def freeze_startup() -> int:
    """Collect, then exempt every object alive now from later collections; how many were.

    Call it once a process has finished starting (its app built, before serving). Objects made
    later are collected as usual. A frozen object is still freed when its last reference goes;
    only frozen objects caught in a reference cycle stay until exit, so call it where start-up
    objects live until exit.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
