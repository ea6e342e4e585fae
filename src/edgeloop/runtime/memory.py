"""Resident memory of this process, read from the kernel, to size what a model load costs.

``/proc/self/statm``'s second field is the resident page count (Linux, see proc(5)); pages times
the page size is the resident set size. Where there is no ``/proc`` the reading is None with the
reason, never a guess.

Memory freed by Python or onnxruntime usually stays in the C allocator's heap, still resident:
a model loaded after another was unloaded would then reuse those pages and read as ~0 MB, and
unloading would not shrink the process at all. So around a measurement, and after an unload,
glibc's ``malloc_trim(0)`` hands free heap pages back to the kernel (see malloc_trim(3)); where
the C library is not glibc this is skipped and the caveat above applies.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
STATM = Path("/proc/self/statm")
MB = 1024 * 1024  # MiB: what `top` and `ps` call MB


@dataclass(frozen=True, slots=True)
class RssDelta:
    """Change of resident memory across one step; ``mb`` is None when it could not be read."""

    mb: float | None
    source: str


def rss_bytes(statm: Path = STATM) -> int | None:
    """This process's resident set size in bytes, or None where ``statm`` cannot be read."""
    try:
        resident_pages = int(statm.read_text(encoding="ascii").split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError, TypeError):  # not glibc (musl, macOS, Windows)
        return None
    return trim


def release_free_memory() -> bool:
    """Collect garbage and return free C-heap pages to the kernel; False where not possible."""
    gc.collect()
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


def measure_rss(step: Callable[[], T], statm: Path = STATM) -> tuple[T, RssDelta]:
    """Run ``step`` and return its result with the RSS change across it.

    Free memory is released before each reading (see the module docstring), so pages freed by
    earlier work are not counted against this step, nor its own temporary buffers. Anything
    other threads allocate meanwhile is counted; the pool serialises loads for that reason.
    """
    release_free_memory()
    before = rss_bytes(statm)
    result = step()
    release_free_memory()
    after = rss_bytes(statm)
    if before is None or after is None:
        return result, RssDelta(None, f"{statm} is not readable on this system")
    return result, RssDelta((after - before) / MB, f"rss delta ({statm})")
