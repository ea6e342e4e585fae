"""The engine registry: engines register by name and by file suffix; ``load_model`` picks one.

Built-in engines: ``onnxruntime`` (``.onnx``), ``litert`` (``.tflite``), ``openvino``
(``.xml``). An engine whose package is missing still registers; it reports
``available() == (False, reason)`` and raises :class:`MissingDependencyError` when used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeloop.core.errors import ConfigError, NotFoundError
from edgeloop.runtime.engine import Engine, LoadedModel, SessionConfig
from edgeloop.runtime.litert_engine import LiteRtEngine
from edgeloop.runtime.onnx_engine import OnnxRuntimeEngine
from edgeloop.runtime.openvino_engine import OpenVinoEngine

_ENGINES: dict[str, Engine] = {}


@dataclass(frozen=True, slots=True)
class EngineStatus:
    """Whether one registered engine can load models on this machine, and why."""

    name: str
    suffixes: tuple[str, ...]
    available: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "suffixes": list(self.suffixes),
            "available": self.available,
            "reason": self.reason,
        }


def register_engine(engine: Engine) -> None:
    """Add ``engine`` under its name; the same name again replaces it (a plugin may override
    a built-in engine).

    Raises:
        ConfigError: the engine has no name or no suffixes.
    """
    if not engine.name or not engine.suffixes:
        raise ConfigError(f"engine {engine!r} needs a name and at least one file suffix")
    _ENGINES[engine.name] = engine


def engine_names() -> tuple[str, ...]:
    return tuple(sorted(_ENGINES))


def get_engine(name: str) -> Engine:
    """The engine registered as ``name``.

    Raises:
        ConfigError: no engine has that name; the message lists the known ones.
    """
    try:
        return _ENGINES[name]
    except KeyError:
        raise ConfigError(
            f"engine {name!r} is not known; known engines: {', '.join(engine_names())}",
            hint="pick one of the known engines, or leave the engine unset to choose by suffix",
        ) from None


def engine_for_path(path: str | Path) -> Engine:
    """The engine that opens files with ``path``'s suffix.

    Raises:
        ConfigError: no engine handles that suffix; the message lists the known suffixes.
    """
    suffix = Path(path).suffix.lower()
    for name in engine_names():
        if suffix in _ENGINES[name].suffixes:
            return _ENGINES[name]
    known = sorted(s for e in _ENGINES.values() for s in e.suffixes)
    raise ConfigError(
        f"no engine opens {str(path)!r} (suffix {suffix or 'none'!r}); "
        f"known suffixes: {', '.join(known)}",
        hint="convert the model to ONNX (`edgeloop export`), or name the engine explicitly",
    )


def engine_to_serve(wanted: str | None, path: str | Path) -> tuple[str, str | None]:
    """The engine that runs ``path`` when ``wanted`` is asked for, and why ``wanted`` was not
    used (None when it was, or when nothing was asked for).

    ``wanted`` applies to ONNX files only (other formats have one engine each); an engine not
    installed here gives way to the engine for the file's suffix. The server and the agent's
    self-test both decide with this, so a model is checked on the engine that will serve it.

    Raises:
        ConfigError: ``wanted`` is not a known engine, or no engine opens the suffix.
    """
    by_suffix = engine_for_path(path).name
    if wanted is None or Path(path).suffix.lower() != ".onnx":
        return by_suffix, None
    ok, reason = get_engine(wanted).available()
    if not ok:
        return by_suffix, f"engine {wanted} not used ({reason}); {by_suffix} by suffix instead"
    return wanted, None


def engine_statuses() -> list[EngineStatus]:
    """Every registered engine with whether it is usable here (never raises)."""
    statuses = []
    for name in engine_names():
        engine = _ENGINES[name]
        ok, reason = engine.available()
        statuses.append(EngineStatus(name, engine.suffixes, ok, reason))
    return statuses


def load_model(
    path: str | Path, config: SessionConfig | None = None, engine: str | None = None
) -> LoadedModel:
    """Open a model file with ``engine`` or, when None, the engine for its suffix.

    ONNX files are checked by :func:`edgeloop.formats.inspect_onnx` before they are parsed.

    Raises:
        NotFoundError: ``path`` does not exist.
        ConfigError: unknown engine name or file suffix.
        MissingDependencyError: the engine's package is not installed.
        UntrustedArtifactError: the file failed the safety checks or is not a model.
        ConversionError: no execution provider could build a session.
    """
    file = Path(path)
    if not file.is_file():
        raise NotFoundError(f"model file {str(file)!r} does not exist", hint="check the path")
    chosen = get_engine(engine) if engine is not None else engine_for_path(file)
    return chosen.load(file, config if config is not None else SessionConfig())


for _builtin in (OnnxRuntimeEngine(), LiteRtEngine(), OpenVinoEngine()):
    register_engine(_builtin)
