"""A model argument of the CLI: a file path as given, or a registry ref ``name[:version]``.

Every command that takes a model (``serve``, ``bench``, ``optimize``, ``tune``, ``convert``,
``fleet publish``) resolves it here, so a ref means the same bytes everywhere. Artifacts are
stored under their sha256 without a suffix, while engines pick a runtime by suffix:
:func:`checkout` links a version into a ``NAME/VERSION/model.<ext>`` folder (the Triton
layout ``edgeloop serve`` reads) so it opens like the file it was published from.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from edgeloop.core.errors import ConfigError, NotFoundError
from edgeloop.core.settings import Settings
from edgeloop.core.types import ModelRef
from edgeloop.registry.store import ModelVersion

# Suffixes that say "this was meant as a file": such a missing path is a missing file, never
# looked up as a model name.
MODEL_SUFFIXES = (".onnx", ".tflite", ".xml", ".bin", ".pt", ".mlmodel", ".mlpackage", ".tar")
# Manifest format -> the suffix engines open it by; formats absent here are not one runnable file.
_SUFFIX = {"onnx": ".onnx", "tflite": ".tflite"}


def resolve_model(text: str, settings: Settings) -> tuple[Path, ModelVersion | None]:
    """``text`` as an existing path (and None), or the registry version it names with the
    path of its verified artifact.

    Raises:
        NotFoundError: neither a path nor a registered model (the message lists what exists).
        ConfigError: ``text`` is neither an existing path nor a valid ``name[:version]``.
        UntrustedArtifactError: the artifact's bytes no longer match their sha256.
    """
    from edgeloop.registry.registry import Registry

    path = Path(text).expanduser()
    if path.exists():
        return path, None
    if path.suffix.lower() in MODEL_SUFFIXES or "/" in text or os.sep in text:
        raise NotFoundError(
            f"model file {text!r} does not exist",
            hint="check the path, or give a registry ref NAME:VERSION (`edgeloop registry list`)",
        )
    ref = ModelRef.parse(text)
    with Registry.open(settings) as registry:
        try:
            version, artifact = registry.resolve(ref)
        except NotFoundError as exc:
            raise NotFoundError(
                f"{text!r} is neither a file nor a registered model: {exc.message}",
                hint=exc.hint,
            ) from exc
    return artifact, version


def checkout(version: ModelVersion, artifact: Path, root: Path) -> Path:
    """Link ``artifact`` as ``root/NAME/VERSION/model.<ext>``; the link's path.

    The link is replaced atomically, so a stale one (its artifact removed and published again)
    is repaired by the next checkout.

    Raises:
        ConfigError: the version's format is not a single file an engine opens.
    """
    fmt = version.manifest.format
    if fmt not in _SUFFIX:
        raise ConfigError(
            f"{version.ref} is a {fmt!r} model; only {', '.join(_SUFFIX)} models run from the "
            "registry here",
            hint="serve or measure its ONNX parent instead "
            "(`edgeloop registry show` names it under lineage)",
        )
    folder = root / version.name / str(version.version)
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / f"model{_SUFFIX[fmt]}"
    tmp = folder / f".link-{uuid.uuid4().hex}"
    tmp.symlink_to(artifact.resolve())
    tmp.replace(link)
    return link


def resolve_runnable(
    text: str, settings: Settings, root: Path | None = None
) -> tuple[Path, ModelVersion | None]:
    """Like :func:`resolve_model`, with a registry version checked out under ``root``
    (default ``HOME/checkout``) so engines open it by its suffix."""
    path, version = resolve_model(text, settings)
    if version is None:
        return path, None
    where = root if root is not None else settings.ensure().home / "checkout"
    return checkout(version, path, where), version
