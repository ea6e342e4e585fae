"""CSV files with a header row and a label column; every other column is a feature."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np

from edgeloop.core.errors import DataError
from edgeloop.data.classes import Label, parse_label
from edgeloop.data.dataset import Dataset
from edgeloop.data.sources import existing_file, file_dataset

# Cell texts read as a missing feature value (pandas reads the same ones as NaN by default).
_MISSING = frozenset({"", "na", "n/a", "nan", "null", "none", "?"})


def load_csv(path: Path | str, label_column: str = "label") -> Dataset:
    """A CSV with a header; ``label_column`` holds the class, every other column a feature.

    Raises:
        NotFoundError: the file does not exist.
        DataError: no header / no label column / no rows, a ragged row, a non-numeric feature,
            a missing, NaN or fractional label (the message names ``file:line``).
    """
    p = existing_file(path)
    try:
        with p.open(encoding="utf-8-sig", newline="") as f:
            names, features, labels = _parse(csv.reader(f), p, label_column)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{p} cannot be read as UTF-8 CSV ({exc})") from exc
    if not names or not features:
        raise DataError(
            f"{p} holds {len(features)} rows and {len(names)} feature columns; expected >= 1 each"
        )
    return file_dataset(
        p,
        np.asarray(features, dtype=np.float32),
        labels,
        f"CSV, label column {label_column!r}, features: {_shorten(names)}",
    )


def _parse(
    reader: Any, p: Path, label_column: str
) -> tuple[list[str], list[list[float]], list[Label]]:
    """(feature column names, feature rows, labels) of an open ``csv.reader``."""
    header = [h.strip() for h in next(reader, [])]
    if label_column not in header:
        raise DataError(
            f"{p}: no column {label_column!r}; the header is {header}",
            hint=f"name the label column {label_column!r}, or call "
            "load_csv(path, label_column=...)",
        )
    li = header.index(label_column)
    features: list[list[float]] = []
    labels: list[Label] = []
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue  # blank line
        where = f"{p}:{reader.line_num}"
        if len(row) != len(header):
            raise DataError(
                f"{where}: {len(row)} cells but the header has {len(header)} (ragged row)",
                hint="give every row one cell per column; leave a cell empty if missing",
            )
        labels.append(parse_label(row[li], f"{where}, column {label_column!r}"))
        features.append([_cell(c, where, header[j]) for j, c in enumerate(row) if j != li])
    return [h for j, h in enumerate(header) if j != li], features, labels


def _cell(text: str, where: str, column: str) -> float:
    value = text.strip()
    if value.lower() in _MISSING:
        return math.nan
    try:
        return float(value)
    except ValueError as exc:
        raise DataError(
            f"{where}: column {column!r} holds {text!r}, not a number",
            hint="features must be numbers; leave the cell empty for a missing value",
        ) from exc


def _shorten(names: list[str], keep: int = 12) -> str:
    shown = ", ".join(names[:keep])
    return shown if len(names) <= keep else f"{shown}, ... ({len(names)} in all)"
