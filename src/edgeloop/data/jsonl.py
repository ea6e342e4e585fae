"""JSON Lines captures (what edge nodes record): one object per line, features + label."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edgeloop.core.errors import DataError
from edgeloop.data.classes import Label, parse_label
from edgeloop.data.dataset import Dataset
from edgeloop.data.sources import existing_file, file_dataset


def load_jsonl(
    path: Path | str, features_key: str = "features", label_key: str = "label"
) -> Dataset:
    """JSON Lines captures, one object per line, e.g. ``{"features": [...], "label": "ok"}``.

    Features may be nested lists (a signal or image sample); ``null`` marks a missing value.
    Other keys (timestamps, device ids) are ignored.

    Raises:
        NotFoundError: the file does not exist.
        DataError: invalid JSON, a missing key, a missing / NaN label, a non-numeric feature or
            a sample shape that differs from the first line's (the message names ``file:line``).
    """
    p = existing_file(path)
    samples: list[npt.NDArray[np.float64]] = []
    labels: list[Label] = []
    first_line = 0
    try:
        with p.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                where = f"{p}:{lineno}"
                record = _json_record(line, where, features_key, label_key)
                labels.append(parse_label(record[label_key], f"{where}, key {label_key!r}"))
                sample = _json_features(record[features_key], where, features_key)
                if samples and sample.shape != samples[0].shape:
                    raise DataError(
                        f"{where}: features have shape {sample.shape} but line {first_line} has "
                        f"{samples[0].shape} (ragged)",
                        hint="every capture needs the same number of features",
                    )
                first_line = first_line or lineno
                samples.append(sample)
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{p} cannot be read as UTF-8 text ({exc})") from exc
    if not samples:
        raise DataError(f"{p} holds no records", hint="write one JSON object per line")
    x = np.stack(samples).astype(np.float32)
    return file_dataset(p, x, labels, f"JSONL captures, keys {features_key!r} / {label_key!r}")


def _json_record(line: str, where: str, features_key: str, label_key: str) -> dict[str, object]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from exc
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if features_key not in record:
        raise DataError(
            f"{where}: no key {features_key!r}; the record has {sorted(record)}",
            hint="write the features under that key, or call load_jsonl(path, features_key=...)",
        )
    if record.get(label_key) is None:
        raise DataError(
            f"{where}: the label {label_key!r} is missing", hint="label every capture or drop it"
        )
    return record


def _json_features(value: object, where: str, key: str) -> npt.NDArray[np.float64]:
    flat: list[float] = []
    shape = _walk(value, flat, where, key)
    if not flat:
        raise DataError(f"{where}: {key!r} is empty")
    return np.asarray(flat, dtype=np.float64).reshape(shape)


def _walk(value: object, flat: list[float], where: str, key: str) -> tuple[int, ...]:
    """Append the numbers of a nested list to ``flat``; return its (rectangular) shape."""
    if value is None:
        flat.append(math.nan)
        return ()
    if isinstance(value, int | float) and not isinstance(value, bool):
        flat.append(float(value))
        return ()
    if not isinstance(value, list):
        raise DataError(
            f"{where}: {key!r} holds {value!r}, not a number",
            hint="features must be numbers (null for a missing value)",
        )
    shapes = {_walk(v, flat, where, key) for v in value}
    if len(shapes) > 1:
        raise DataError(f"{where}: {key!r} is a ragged nested list (shapes {sorted(shapes)})")
    return (len(value), *(shapes.pop() if shapes else ()))
