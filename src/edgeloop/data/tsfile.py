"""A reader for the ``.ts`` format of the UEA/UCR time-series classification archive.

sktime ships its bundled sets in this format; reading it here means ``basic-motions`` loads
without importing sktime (which takes seconds). The format: ``#`` comment lines, ``@key value``
header lines, then after ``@data`` one sample per line, its dimensions separated by ``:``, the
values of a dimension by ``,`` (``?`` = missing) and the class label last.
Reference: https://www.timeseriesclassification.com/ (the archive's format description).

Only what the archive's equal-length classification sets use is supported: no timestamps,
every sample with the same number of dimensions and the same length.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edgeloop.core.errors import DataError, NotFoundError


@dataclass(frozen=True, slots=True)
class TsFile:
    """The samples of one ``.ts`` file: ``x`` is (samples, dimensions, length)."""

    path: Path
    problem: str
    x: npt.NDArray[np.float32]
    labels: tuple[str, ...]
    declared_classes: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.x.ndim != 3 or self.x.shape[0] != len(self.labels):
            raise DataError(
                f"{self.path}: x has shape {self.x.shape} for {len(self.labels)} labels; "
                "expected (samples, dimensions, length) with one label per sample"
            )


def read_ts(path: Path) -> TsFile:
    """Parse a ``.ts`` file.

    Raises:
        NotFoundError: the file does not exist.
        DataError: a header is missing or unsupported, or a data line is ragged, holds a
            non-number or a label the header does not declare (message names file and line).
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as exc:
        raise NotFoundError(f"{path} does not exist", hint="check the path") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} cannot be read as text: {exc}") from exc
    header: dict[str, str] = {}
    schema: _Schema | None = None
    rows: list[list[list[float]]] = []
    labels: list[str] = []
    for lineno, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path}:{lineno}"
        if schema is None:
            key, _, value = line.partition(" ")
            if key.lower() == "@data":
                schema = _Schema.from_header(header, path)
            elif key.startswith("@"):
                header[key[1:].lower()] = value.strip()
            else:
                raise DataError(f"{where}: data before the @data line", hint="add '@data' first")
            continue
        values, label = schema.parse_row(line, where)
        rows.append(values)
        labels.append(label)
    if schema is None or not rows:
        raise DataError(f"{path} holds no samples", hint="a .ts file lists samples after '@data'")
    return TsFile(
        path=path,
        problem=header.get("problemname", path.stem),
        x=np.asarray(rows, dtype=np.float32),
        labels=tuple(labels),
        declared_classes=schema.classes,
    )


@dataclass(slots=True)
class _Schema:
    """What the header promises; the first data row fixes what it leaves open."""

    classes: tuple[str, ...]
    dims: int | None
    length: int | None

    @classmethod
    def from_header(cls, header: dict[str, str], path: Path) -> _Schema:
        if header.get("timestamps", "false").lower() != "false":
            raise DataError(
                f"{path}: '@timeStamps true' is not supported",
                hint="write the series without timestamps, one value per step",
            )
        flag, _, names = header.get("classlabel", "false").partition(" ")
        if flag.lower() != "true" or not names.split():
            raise DataError(
                f"{path}: no '@classLabel true NAME...' header; only labelled classification "
                "files can be loaded",
                hint="declare the classes, e.g. '@classLabel true walking running'",
            )
        try:
            dims = int(header["dimensions"]) if "dimensions" in header else None
            length = int(header["serieslength"]) if "serieslength" in header else None
        except ValueError as exc:
            raise DataError(f"{path}: '@dimensions' / '@seriesLength' is not an integer") from exc
        return cls(tuple(names.split()), dims, length)

    def parse_row(self, line: str, where: str) -> tuple[list[list[float]], str]:
        *dims, label = line.split(":")
        label = label.strip()
        if label not in self.classes:
            raise DataError(
                f"{where}: label {label!r} is not among the declared classes {list(self.classes)}",
                hint="fix the label or add it to the '@classLabel' header",
            )
        if self.dims is None:
            self.dims = len(dims)
        if len(dims) != self.dims:
            raise DataError(
                f"{where}: {len(dims)} dimensions, expected {self.dims} (ragged row)",
                hint="every sample needs the same channels",
            )
        return [self._series(text, d, where) for d, text in enumerate(dims)], label

    def _series(self, text: str, d: int, where: str) -> list[float]:
        try:
            series = [float("nan") if v.strip() == "?" else float(v) for v in text.split(",")]
        except ValueError as exc:
            raise DataError(
                f"{where}: dimension {d} holds a non-number ({exc})",
                hint="write numbers, or '?' for a missing value",
            ) from exc
        if self.length is None:
            self.length = len(series)
        if len(series) != self.length:
            raise DataError(
                f"{where}: dimension {d} has {len(series)} values, expected {self.length} "
                "(ragged row)",
                hint="resample the series to one length; unequal lengths are not supported",
            )
        return series
