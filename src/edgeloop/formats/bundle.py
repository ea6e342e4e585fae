"""Several files of one target (IR .xml + .bin, a .mlpackage folder, C source + header) as one tar.

The registry stores one file per version, content-addressed; the tar is deterministic (sorted
names, zero times and owners) so the same conversion gives the same sha256.
"""

from __future__ import annotations

import tarfile
from collections.abc import Sequence
from pathlib import Path


def _reset(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def pack(paths: Sequence[Path], out: Path) -> Path:
    """Write ``paths`` (files or folders, by their names) into the tar ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(paths, key=lambda p: p.name):
            members = [path, *sorted(path.rglob("*"))] if path.is_dir() else [path]
            for member in members:
                name = member.relative_to(path.parent).as_posix()
                tar.add(member, arcname=name, recursive=False, filter=_reset)
    tmp.replace(out)
    return out


def size_of(paths: Sequence[Path]) -> int:
    """Bytes of ``paths``, folders counted by the files inside."""
    total = 0
    for path in paths:
        files = path.rglob("*") if path.is_dir() else [path]
        total += sum(f.stat().st_size for f in files if f.is_file())
    return total
