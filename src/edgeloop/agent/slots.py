"""Two model slots, A and B, and the pointer naming the one that serves.

``slots/a/`` and ``slots/b/`` each hold one staged model in the model-repository layout the server
reads (``model/<name>/<version>/model.<ext>``), the signed deployment document it came with, and
``meta.json``, written last: a slot without ``meta.json`` is empty (a crash mid-stage leaves it
so). ``slots/active`` holds ``a`` or ``b``; ACTIVATE rewrites it in one atomic, durable rename,
so after a crash it names the old slot or the new one, never neither.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeloop.agent.deployment import Deployment
from edgeloop.agent.durable import fsync_dir, write_durable, write_json
from edgeloop.agent.update_state import now_iso
from edgeloop.core.errors import ConfigError

SLOT_NAMES = ("a", "b")
_CHUNK = 1 << 20
# The reference profile beside a slot's model (``model.onnx``): the name the server's drift
# monitor reads (``<stem>.profile.npz``, serving/watch.py).
PROFILE_FILE = "model.profile.npz"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class SlotModel:
    """The model a slot holds, as staged."""

    slot: str
    name: str
    version: int
    variant: str
    sha256: str
    revision: int
    staged_at: str
    folder: Path  # the model folder the server's Origin points at (``.../model/<name>``)
    file: Path
    document: bytes  # the signed deployment document it was staged from

    def to_dict(self, since: str | None = None) -> dict[str, Any]:
        """The report's ``active`` / ``previous`` object."""
        return {
            "name": self.name,
            "version": self.version,
            "variant": self.variant,
            "sha256": self.sha256,
            "since": since or self.staged_at,
            "slot": self.slot,
            "revision": self.revision,
        }


class Slots:
    """The slot folders under ``root`` and the active pointer."""

    def __init__(self, root: Path) -> None:
        self.root = root
        for name in SLOT_NAMES:
            (root / name).mkdir(parents=True, exist_ok=True)

    @property
    def pointer(self) -> Path:
        return self.root / "active"

    def active_name(self) -> str | None:
        """The slot the pointer names, or None on a node that never activated a model.

        Raises:
            ConfigError: the pointer holds something else than a slot name.
        """
        try:
            text = self.pointer.read_text().strip()
        except FileNotFoundError:
            return None
        if text not in SLOT_NAMES:
            raise ConfigError(
                f"the active slot pointer {str(self.pointer)!r} holds {text[:20]!r}, "
                f"expected one of {SLOT_NAMES}",
                hint="write 'a' or 'b' into it, whichever slot holds a good model",
            )
        return text

    @staticmethod
    def other(name: str | None) -> str:
        return "b" if name == "a" else "a"

    def activate(self, name: str) -> None:
        """Point at slot ``name``: temp file, fsync, rename, fsync the folder."""
        if name not in SLOT_NAMES:
            raise ConfigError(f"slot {name!r} is not one of {SLOT_NAMES}")
        write_durable(self.pointer, name.encode())

    def deactivate(self) -> None:
        """Point at no slot (serve nothing): the pointer is removed, durably."""
        self.pointer.unlink(missing_ok=True)
        fsync_dir(self.root)

    def read(self, name: str | None) -> SlotModel | None:
        """What slot ``name`` holds, or None when it is empty (or ``name`` is None)."""
        if name is None:
            return None
        folder = self.root / name
        try:
            meta = json.loads((folder / "meta.json").read_bytes())
            document = (folder / "deployment.json").read_bytes()
        except (OSError, ValueError):
            return None
        file = folder / meta["file"]
        return SlotModel(
            slot=name,
            name=meta["name"],
            version=int(meta["version"]),
            variant=meta["variant"],
            sha256=meta["sha256"],
            revision=int(meta["revision"]),
            staged_at=meta["staged_at"],
            folder=folder / "model" / meta["name"],
            file=file,
            document=document,
        )

    def intact(self, model: SlotModel) -> bool:
        """The slot's file still hashes to what was staged (a disk fault or an edit shows)."""
        try:
            return sha256_file(model.file) == model.sha256
        except OSError:
            return False

    def clear(self, name: str) -> None:
        """Empty slot ``name``: ``meta.json`` goes first, so a crash leaves it empty."""
        folder = self.root / name
        (folder / "meta.json").unlink(missing_ok=True)
        fsync_dir(folder)
        for child in folder.iterdir():
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()

    def stage(
        self,
        name: str,
        artifact: Path,
        document: bytes,
        deployment: Deployment,
        profile: Path | None = None,
    ) -> SlotModel:
        """Copy a verified artifact and its document into slot ``name`` (never the active one);
        a verified reference ``profile`` goes beside the model as ``model.profile.npz``, where
        the server's drift monitor looks for it.

        Raises:
            ConfigError: ``name`` is the active slot.
        """
        if name == self.active_name():
            raise ConfigError(f"slot {name!r} is serving; staging goes to the other slot")
        spec = deployment.model
        if spec is None:
            raise ConfigError(f"revision {deployment.revision} names no model to stage")
        self.clear(name)
        folder = self.root / name
        relative = Path("model") / spec.name / str(spec.version) / f"model{spec.suffix}"
        target = folder / relative
        target.parent.mkdir(parents=True)
        copies = [(artifact, target)]
        if profile is not None:
            copies.append((profile, target.parent / PROFILE_FILE))
        for source, copy in copies:
            shutil.copyfile(source, copy)
            with copy.open("rb") as fh:
                os.fsync(fh.fileno())
        fsync_dir(target.parent)
        write_durable(folder / "deployment.json", document)
        write_json(
            folder / "meta.json",
            {
                "name": spec.name,
                "version": spec.version,
                "variant": spec.variant,
                "sha256": spec.sha256,
                "revision": deployment.revision,
                "staged_at": now_iso(),
                "file": str(relative),
            },
        )
        model = self.read(name)
        if model is None:  # just written; only a vanished disk gets here
            raise ConfigError(f"slot {name!r} could not be read back after staging")
        return model
