"""What earlier steps found out about a model file, carried into its manifest on publish.

``edgeloop train`` leaves a checkpoint (data set, its content hash, loader options, recipe,
labels, test metrics); ``edgeloop export --format json`` prints the parity against torch;
``edgeloop bench --format json`` prints a measurement. :func:`with_evidence` adds each one
given to a manifest, after checking that the report describes this file (its byte size): a
figure of another file must never be recorded as this one's.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from edgeloop.core.errors import ConfigError, NotFoundError
from edgeloop.core.types import Manifest, Measurement, Parity

T = TypeVar("T")


def with_evidence(
    manifest: Manifest,
    model_file: Path,
    checkpoint: Path | None,
    export_report: Path | None,
    bench_reports: Sequence[Path],
) -> Manifest:
    """``manifest`` with the checkpoint's data and recipe, the export's parity and the
    bench measurements added (given fields of ``manifest`` are kept where a source has none).

    Raises:
        NotFoundError: a report or the checkpoint does not exist.
        ConfigError: a report is not the JSON its command prints, or describes another file.
    """
    if checkpoint is not None:
        manifest = _from_checkpoint(manifest, checkpoint)
    if export_report is not None:
        report = _read(export_report, "export")
        model = report.get("model")
        size = model.get("size_bytes") if isinstance(model, dict) else None
        _same_file(export_report, size, model_file)
        found = report.get("parity") or {}
        parity = _parse(export_report, functools.partial(Parity.from_dict, found))
        manifest = dataclasses.replace(manifest, parity=parity)
    measured = list(manifest.measurements)
    for path in bench_reports:
        report = _read(path, "bench")
        _same_file(path, report.get("size_bytes"), model_file)
        measured.append(_parse(path, functools.partial(Measurement.from_dict, report)))
    return dataclasses.replace(manifest, measurements=tuple(measured))


def _from_checkpoint(manifest: Manifest, folder: Path) -> Manifest:
    from edgeloop.training.checkpoint import read_checkpoint, recorded_data

    info = read_checkpoint(folder)
    data = recorded_data(folder)
    recipe: dict[str, Any] = {
        "arch": info.arch.to_dict(),
        "fit": None if info.fit is None else info.fit.to_dict(),
        **dict(manifest.recipe),
    }
    if data is not None:  # how the data was read and prepared: the serving side needs the same
        recipe["data"] = {"spec": data.spec, "options": data.options, "clean": data.cleaned}
    return dataclasses.replace(
        manifest,
        source_data_hash=info.dataset_hash or manifest.source_data_hash,
        dataset=info.dataset or manifest.dataset,
        recipe=recipe,
        metrics={**(info.metrics.to_dict_floats() if info.metrics else {}), **manifest.metrics},
        labels=manifest.labels or info.classes,
        tools={"torch": info.torch_version, **dict(manifest.tools)},
    )


def _read(path: Path, command: str) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise NotFoundError(f"{command} report {str(path)!r} does not exist") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(
            f"{command} report {str(path)!r} is not readable JSON: {exc}",
            hint=f"save what `edgeloop {command} ... --format json` prints to stdout",
        ) from exc
    if not isinstance(value, dict):
        raise ConfigError(f"{command} report {str(path)!r} is not a JSON object")
    return value


def _same_file(report: Path, size: object, model_file: Path) -> None:
    actual = model_file.stat().st_size
    if size != actual:
        raise ConfigError(
            f"report {str(report)!r} describes a model of {size} bytes, but "
            f"{str(model_file)!r} has {actual}: it is the report of another file",
            hint="give the report printed for this very file, or leave it out",
        )


def _parse(report: Path, build: Callable[[], T]) -> T:
    try:
        return build()
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(
            f"report {str(report)!r} lacks what it should hold: {exc!r}",
            hint="save what the command prints with --format json, unchanged",
        ) from exc
