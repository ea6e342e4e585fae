"""What is served: models, versions and variants found in files and folders.

Three kinds of path, the last two in the Triton model-repository layout:

- a model file (``cnn.onnx``): model ``cnn`` (or ``--name``), version ``1``;
- a model folder (``cnn/1/model.onnx``, ``cnn/2/model.onnx``): model ``cnn``, every version;
- a repository root holding model folders (``repo/cnn/1/model.onnx``, ``repo/kws/3/...``).

A version folder's ``model.<ext>`` is the ``default`` variant; ``model.<variant>.<ext>``
(``model.int8.onnx``) is another variant of the same version. Versions are positive integers, as
Triton's are. Scanning is the only I/O here: it lists folders and stats files, reads nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeloop.core.errors import ConfigError, ConflictError, NotFoundError
from edgeloop.core.types import ModelRef

SUFFIXES = (".onnx", ".tflite", ".xml")
DEFAULT_VARIANT = "default"
_LAYOUT = "MODEL/VERSION/model.onnx (versions are folders named 1, 2, ...)"


@dataclass(frozen=True, slots=True)
class ModelSource:
    """One servable file. ``stamp`` (size, mtime ns) tells a rescan that the file changed."""

    name: str
    version: str
    variant: str
    path: Path
    stamp: tuple[int, int]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "variant": self.variant,
            "path": str(self.path),
        }


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a model came from, so ``load`` can look there again for new versions."""

    name: str
    path: Path

    def scan(self) -> tuple[ModelSource, ...]:
        """The model's sources as they are on disk now.

        Raises:
            NotFoundError: the file or folder is gone, or holds no version any more.
        """
        if self.path.is_file():
            return (_file_source(self.name, self.path),)
        return _model_folder(self.name, self.path)


def scan(paths: Sequence[Path], name: str | None = None) -> tuple[Origin, ...]:
    """The models the given files and folders hold, each with its origin.

    Raises:
        NotFoundError: a path does not exist, or a folder holds no model in the layout.
        ConfigError: ``name`` given while the paths hold several models; a bad model name.
        ConflictError: two paths hold models of the same name.
    """
    origins: list[Origin] = []
    for path in paths:
        origins.extend(_origins(Path(path)))
    if name is not None:
        if len(origins) != 1:
            raise ConfigError(
                f"--name {name!r} was given, but the paths hold {len(origins)} models "
                f"({', '.join(o.name for o in origins)})",
                hint="use --name with a single model file or model folder",
            )
        origins = [Origin(ModelRef(name).name, origins[0].path)]
    seen: dict[str, Path] = {}
    for origin in origins:
        if origin.name in seen:
            raise ConflictError(
                f"two models are named {origin.name!r}: {str(seen[origin.name])!r} and "
                f"{str(origin.path)!r}",
                hint="rename one file or folder, or serve it alone with --name",
            )
        seen[origin.name] = origin.path
    return tuple(origins)


def _origins(path: Path) -> list[Origin]:
    if path.is_file():
        return [Origin(_checked_name(path.stem, path), path)]
    if not path.is_dir():
        raise NotFoundError(f"model path {str(path)!r} does not exist", hint="check the path")
    if _versions(path):
        return [Origin(_checked_name(path.name, path), path)]
    models = [d for d in sorted(path.iterdir()) if d.is_dir() and _versions(d)]
    if not models:
        raise NotFoundError(
            f"folder {str(path)!r} holds no model in the layout {_LAYOUT}",
            hint="pass a model file, a model folder or a repository root",
        )
    return [Origin(_checked_name(d.name, d), d) for d in models]


def _checked_name(name: str, path: Path) -> str:
    try:
        return ModelRef(name).name
    except ConfigError as exc:
        raise ConfigError(
            f"{str(path)!r} would serve a model named {name!r}, which is not a valid name",
            hint="rename it, or pass --name NAME",
        ) from exc


def _versions(folder: Path) -> list[Path]:
    """Version folders (positive integers) of ``folder`` that hold a model file."""
    found = []
    for sub in folder.iterdir():
        if sub.is_dir() and sub.name.isdigit() and int(sub.name) >= 1 and _files(sub):
            found.append(sub)
    return sorted(found, key=lambda p: int(p.name))


def _files(version_dir: Path) -> list[Path]:
    return sorted(p for p in version_dir.iterdir() if p.is_file() and _variant(p.name) is not None)


def _variant(filename: str) -> str | None:
    """``model.onnx`` -> ``default``; ``model.int8.onnx`` -> ``int8``; anything else None."""
    for suffix in SUFFIXES:
        if filename.startswith("model.") and filename.endswith(suffix):
            middle = filename[len("model.") : -len(suffix)]
            if not middle:
                return DEFAULT_VARIANT
            return middle if "." not in middle else None
    return None


def _model_folder(name: str, folder: Path) -> tuple[ModelSource, ...]:
    if not folder.is_dir():
        raise NotFoundError(f"model folder {str(folder)!r} does not exist any more")
    sources = [
        _source(name, version.name, file)
        for version in _versions(folder)
        for file in _files(version)
    ]
    if not sources:
        raise NotFoundError(f"model folder {str(folder)!r} holds no version ({_LAYOUT})")
    _check_variants(sources)
    return tuple(sources)


def _check_variants(sources: Iterable[ModelSource]) -> None:
    seen: dict[tuple[str, str], Path] = {}
    for s in sources:
        key = (s.version, s.variant)
        if key in seen:
            raise ConflictError(
                f"model {s.name!r} version {s.version} has two {s.variant!r} variants: "
                f"{seen[key].name} and {s.path.name}",
                hint="keep one model file per variant in a version folder",
            )
        seen[key] = s.path


def _file_source(name: str, path: Path) -> ModelSource:
    return _source(name, "1", path, DEFAULT_VARIANT)


def _source(name: str, version: str, path: Path, variant: str | None = None) -> ModelSource:
    try:
        stat = path.stat()
    except OSError as exc:
        raise NotFoundError(f"model file {str(path)!r} cannot be read: {exc.strerror}") from exc
    chosen = variant if variant is not None else _variant(path.name) or DEFAULT_VARIANT
    return ModelSource(name, version, chosen, path, (stat.st_size, stat.st_mtime_ns))
