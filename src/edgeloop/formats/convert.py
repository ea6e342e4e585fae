"""Conversion targets: a typed registry of exporters, and the verification every output gets.

An exporter turns the parent (an ONNX file, plus the torch module when the converter needs
one) into the files of one target. :func:`convert` then checks the output the only honest way:
by running it where it can run (ONNX Runtime, LiteRT, TFLM, OpenVINO) on held-out samples and
comparing with the parent (max abs diff, top-1 agreement) and the labels (accuracy). A target
that cannot run here (Core ML needs macOS, TensorRT a GPU, the Edge TPU compiler its vendor
toolchain) says so in ``not_run``, never as done.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from edgeloop.core.errors import ConfigError, NotFoundError
from edgeloop.core.types import Parity
from edgeloop.formats.parity import Predict, measure_parity, onnx_predictor

if TYPE_CHECKING:
    import torch

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class ConvertSource:
    """The parent model and the real samples conversions calibrate and verify on.

    ``module`` is the deployable torch module (from the parent's checkpoint) for converters
    that start from torch; without it they rebuild one from the ONNX file (onnx2torch);
    ``calibration`` are training samples (INT8 calibration only),
    ``x_check`` / ``y_check`` the held-out split named ``split``.
    """

    onnx: Path
    name: str
    calibration: F32
    x_check: F32
    y_check: npt.NDArray[np.int64] | None
    split: str
    module: torch.nn.Module | None = None


@dataclass(frozen=True)
class Converted:
    """One target's output: files, how it was checked, and what could not be done here.

    ``artifact`` is the one file that is registered (a folder target is packed into a tar);
    ``size_bytes`` the bytes a device stores. ``ran_on`` names the engine that ran it here, or
    None with the reason in ``not_run``. ``predict`` runs it (float in/out) when ``ran_on``.
    """

    target: str
    format: str
    files: tuple[Path, ...]
    artifact: Path
    size_bytes: int
    ran_on: str | None
    not_run: str | None
    tools: dict[str, str]
    details: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    predict: Predict | None = None
    parity: Parity | None = None
    accuracy: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "format": self.format,
            "files": [str(f) for f in self.files],
            "artifact": str(self.artifact),
            "size_bytes": self.size_bytes,
            "ran_on": self.ran_on,
            "not_run": self.not_run,
            "parity": None if self.parity is None else self.parity.to_dict(),
            "accuracy": self.accuracy,
            "tools": dict(self.tools),
            "details": self.details,
            "notes": list(self.notes),
        }


Produce = Callable[[ConvertSource, Path, dict[str, Converted]], Converted]


@dataclass(frozen=True)
class Exporter:
    """A registered target: its name, manifest format, extra, and the targets it builds on.

    ``from_torch``: it converts a torch module, not the ONNX file: the checkpoint's, else the
    parent rebuilt by onnx2torch (:mod:`edgeloop.formats.onnx_torch`). ``missing`` says why its
    converter is not usable on this machine (None when it is), ``refuses`` why it cannot take
    this parent (``(onnx, has_module)``), both without converting anything.
    """

    name: str
    format: str
    extra: str
    description: str
    produce: Produce
    needs: tuple[str, ...] = ()
    from_torch: bool = False
    missing: Callable[[], str | None] | None = None
    refuses: Callable[[Path, bool], str | None] | None = None


def why_not(name: str, *, has_module: bool, onnx: Path | None = None) -> str | None:
    """Why target ``name`` cannot be made here (None when it can): its converter or one of the
    targets it builds on is not installed, it converts from a torch module and none is given,
    or it cannot take the parent ``onnx`` (when given).

    Raises:
        ConfigError: ``name`` is not a known target.
    """
    exp = exporter(name)
    for need in exp.needs:
        if (reason := why_not(need, has_module=has_module, onnx=onnx)) is not None:
            return f"it builds on {need}, which cannot be made: {reason}"
    if exp.missing is not None and (reason := exp.missing()) is not None:
        return reason
    if exp.from_torch and not has_module:
        from edgeloop.formats.onnx_torch import why_not_foreign

        if (reason := why_not_foreign(onnx)) is not None:
            return f"it converts from a torch module, and none was given: {reason}"
    return exp.refuses(onnx, has_module) if exp.refuses is not None and onnx else None


def for_device(
    targets: Sequence[str], *, has_module: bool, onnx: Path | None = None
) -> tuple[list[str], dict[str, str]]:
    """The first of a device's ``targets`` (preferred first) that can be made here, and why
    each one before it cannot. Entries that are no conversion (``onnx``: the parent itself)
    are passed over.

    Raises:
        ConfigError: none can be made (each reason is named).
    """
    known = {e.name for e in exporters()}
    skipped: dict[str, str] = {}
    for name in targets:
        if name not in known:
            continue
        if (reason := why_not(name, has_module=has_module, onnx=onnx)) is None:
            return [name], skipped
        skipped[name] = reason
    takes_onnx = "onnx" in targets
    raise ConfigError(
        "none of the device's conversion targets can be made here: "
        + "; ".join(f"{name}: {reason}" for name, reason in skipped.items()),
        hint=(
            "the device also runs the ONNX parent as it is (`edgeloop serve MODEL`); or "
            if takes_onnx
            else ""
        )
        + "install a converter named above, or pass --checkpoint DIR",
    )


_REGISTRY: dict[str, Exporter] = {}


def register(exporter: Exporter) -> Exporter:
    """Add ``exporter`` to the registry (a name is registered once)."""
    if exporter.name in _REGISTRY:
        raise ConfigError(f"target {exporter.name!r} is already registered")
    _REGISTRY[exporter.name] = exporter
    return exporter


def exporters() -> tuple[Exporter, ...]:
    _load_builtin()
    return tuple(_REGISTRY.values())


def exporter(name: str) -> Exporter:
    """The exporter called ``name``.

    Raises:
        NotFoundError: unknown target (the message lists the known ones).
    """
    _load_builtin()
    if name not in _REGISTRY:
        raise NotFoundError(
            f"conversion target {name!r} is not known; known targets: {', '.join(_REGISTRY)}",
            hint="`edgeloop convert --list` describes each target",
        )
    return _REGISTRY[name]


def plan(targets: Iterable[str]) -> list[Exporter]:
    """The exporters for ``targets`` plus what they build on, each once, dependencies first."""
    ordered: list[Exporter] = []

    def visit(name: str) -> None:
        exp = exporter(name)
        for need in exp.needs:
            visit(need)
        if exp not in ordered:
            ordered.append(exp)

    for name in targets:
        visit(name)
    return ordered


def convert(
    source: ConvertSource,
    targets: Iterable[str],
    out_dir: Path,
    *,
    on_target: Callable[[str], None] | None = None,
) -> list[Converted]:
    """Produce and verify each target (and those it builds on) into ``out_dir``.

    Raises:
        EdgeError: from the first exporter that failed (missing extra, unsupported op, ...).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    done: dict[str, Converted] = {}
    parent = onnx_predictor(source.onnx)
    for exp in plan(targets):
        if on_target is not None:
            on_target(exp.name)
        done[exp.name] = verify(exp.produce(source, out_dir, done), source, parent)
    return list(done.values())


def verify(result: Converted, source: ConvertSource, parent: Predict) -> Converted:
    """Run ``result`` on the held-out samples if it runs here: parity with the parent, accuracy."""
    if result.predict is None:
        return result
    parity = measure_parity(parent, result.predict, source.x_check, split=source.split)
    accuracy = None
    if source.y_check is not None:
        labels = result.predict(source.x_check).argmax(axis=1)
        accuracy = float(np.mean(labels == source.y_check))
    return replace(result, parity=parity, accuracy=accuracy)


def _load_builtin() -> None:
    # The built-in exporters register on import; imported here so the registry is never empty.
    import edgeloop.formats.targets  # noqa: F401
