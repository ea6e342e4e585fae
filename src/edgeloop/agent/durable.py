"""Durable writes: a file that survives a power cut whole (old or new), never half.

:func:`edgeloop.core.files.write_atomic` writes a temp file, fsyncs it and renames it over the
target; a rename is only durable once the directory entry is on disk too, so
:func:`write_durable` also fsyncs the folder (POSIX leaves that to the caller; ext4 with
``data=ordered`` usually persists it, other file systems may not).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from edgeloop.core.files import write_atomic


def fsync_dir(folder: Path) -> None:
    """Flush ``folder``'s entries (renames, new files) to disk."""
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durable(path: Path, data: bytes) -> None:
    """Temp file, fsync, rename over ``path``, fsync the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data)
    fsync_dir(path.parent)


def write_json(path: Path, doc: Any) -> None:
    """``doc`` as indented JSON, written durably."""
    write_durable(path, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode())
