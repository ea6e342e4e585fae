"""Loaders for user data, and :func:`load_data`, which picks one by name, suffix or folder.

Missing feature values (an empty cell, ``NaN``, JSON ``null``) are allowed here and imputed by
:func:`edgeloop.data.clean.clean`; missing or NaN labels are not. Every error names the file
and the line (or array index, or class folder) and says how to fix it.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edgeloop.core.errors import ConfigError, DataError, NotFoundError
from edgeloop.data.bundled import bundled_names, load_bundled
from edgeloop.data.classes import parse_label
from edgeloop.data.csvfile import load_csv
from edgeloop.data.dataset import Dataset
from edgeloop.data.images import load_image_folder
from edgeloop.data.jsonl import load_jsonl
from edgeloop.data.options import ColorMode, LoadOptions
from edgeloop.data.sources import existing_file, file_dataset, modality_of
from edgeloop.data.tsfile import read_ts

__all__ = [
    "load_csv",
    "load_data",
    "load_image_folder",
    "load_jsonl",
    "load_npz",
    "load_ts",
]


def _read_npz(p: Path) -> dict[str, npt.NDArray[np.generic]]:
    hint = "write it with numpy.savez(path, x=samples, y=labels)"
    try:
        loaded = np.load(p, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{p} is not a readable .npz file ({exc})", hint=hint) from exc
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise DataError(f"{p} holds one array, not an .npz archive of x and y", hint=hint)
    try:
        with loaded as npz:
            return {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:  # object arrays need pickle
        raise DataError(f"{p}: an array cannot be read without pickle ({exc})", hint=hint) from exc


def load_npz(path: Path | str) -> Dataset:
    """An ``.npz`` with arrays ``x`` (samples first) and ``y``, optionally ``classes``.

    With ``classes``, ``y`` holds indices into it; without, ``y`` may hold ints or strings.
    The modality follows from the sample shape (see :class:`~edgeloop.data.dataset.Modality`).

    Raises:
        NotFoundError: the file does not exist.
        DataError: not an npz, ``x``/``y`` missing or non-numeric, lengths differ, or a label
            is missing, NaN or outside ``classes`` (the message names the index).
    """
    p = existing_file(path)
    x, y, classes = _check_arrays(_read_npz(p), p)
    labels = [parse_label(v, f"{p}: y[{i}]") for i, v in enumerate(y.tolist())]
    if classes is None:
        return file_dataset(p, x, labels, "NPZ arrays x, y")
    for i, v in enumerate(labels):
        if not isinstance(v, int) or not 0 <= v < len(classes):
            raise DataError(
                f"{p}: y[{i}] = {v!r} is not an index into classes ({len(classes)} names)",
                hint="with a 'classes' array, y holds 0-based indices into it",
            )
    return Dataset(
        name=p.stem,
        x=x,
        y=np.asarray(labels, dtype=np.int64),
        classes=classes,
        modality=modality_of(tuple(x.shape[1:]), str(p)),
        source=str(p),
        description="NPZ arrays x, y, classes",
    )


def _check_arrays(
    arrays: dict[str, npt.NDArray[np.generic]], p: Path
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.generic], tuple[str, ...] | None]:
    """(x as float32, y, class names or None) after checking names, dtypes and lengths."""
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise DataError(
            f"{p}: arrays {missing} missing; it holds {sorted(arrays)}",
            hint="save samples as 'x' and labels as 'y': numpy.savez(path, x=x, y=y)",
        )
    x, y = arrays["x"], arrays["y"]
    if x.ndim < 2 or not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise DataError(
            f"{p}: x has shape {x.shape} and dtype {x.dtype}; expected numbers, samples first"
        )
    if len(x) == 0:
        raise DataError(f"{p}: x holds no samples", hint="save at least one sample in x")
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(
            f"{p}: x holds {len(x)} samples but y has shape {y.shape}",
            hint="give exactly one label per sample",
        )
    names = arrays.get("classes")
    classes = None if names is None else tuple(str(c) for c in names.reshape(-1).tolist())
    return x.astype(np.float32), y, classes


def load_ts(path: Path | str) -> Dataset:
    """A labelled ``.ts`` file of the UEA/UCR archive: x is (n, dimensions, length).

    Raises:
        NotFoundError: the file does not exist.
        DataError: see :func:`edgeloop.data.tsfile.read_ts`.
    """
    ts = read_ts(existing_file(path))
    return file_dataset(ts.path, ts.x, list(ts.labels), f".ts file, problem {ts.problem!r}")


_BY_SUFFIX: dict[str, Callable[[Path], Dataset]] = {
    ".csv": load_csv,
    ".npz": load_npz,
    ".jsonl": load_jsonl,
    ".ndjson": load_jsonl,
    ".ts": load_ts,
}


def load_data(spec: str | Path, options: LoadOptions | None = None) -> Dataset:
    """A bundled set by short name, or user data by path: a folder is an image folder, a file
    is read by its suffix (.csv, .npz, .jsonl/.ndjson, .ts). A bundled name wins over a file of
    the same name in the working directory; write ``./digits`` for the file.

    ``options`` are the loaders' settings (CSV label column, JSONL keys, image colour and size);
    one that does not apply to the data's kind is refused. A set with no samples is refused.

    Raises:
        NotFoundError: neither a bundled name nor an existing path.
        ConfigError: a file type no loader reads, or an option that does not apply to it.
        DataError, MissingDependencyError: from the loader that ran; DataError for an empty set.
    """
    opts = options if options is not None else LoadOptions()
    text = str(spec)
    if text in bundled_names():
        opts.check_applies("bundled", f"the bundled data set {text!r}")
        return _not_empty(load_bundled(text), text)
    path = Path(text).expanduser()
    if not path.exists():
        raise NotFoundError(
            f"{text!r} is neither a bundled data set ({', '.join(bundled_names())}) nor an "
            "existing path",
            hint="run `edgeloop data list` for the bundled names, or check the path",
        )
    if path.is_dir():
        opts.check_applies("images", f"{text!r}, a folder of images")
        grey = opts.color is not ColorMode.RGB
        return _not_empty(load_image_folder(path, size=opts.image_size, grayscale=grey), text)
    suffix = path.suffix.lower()
    loader = _BY_SUFFIX.get(suffix)
    if loader is None:
        raise ConfigError(
            f"{path}: no loader reads {path.suffix or 'files without a suffix'!r}; "
            f"known: {', '.join(_BY_SUFFIX)} or a folder of images",
            hint="convert the data to CSV (with a 'label' column) or NPZ (x, y)",
        )
    kind = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}.get(suffix, suffix)
    opts.check_applies(kind, f"{text!r} ({suffix} file)")
    if kind == "csv":
        return _not_empty(load_csv(path, label_column=opts.label_column or "label"), text)
    if kind == "jsonl":
        features, label = opts.features_key or "features", opts.label_key or "label"
        return _not_empty(load_jsonl(path, features_key=features, label_key=label), text)
    return _not_empty(loader(path), text)


def _not_empty(ds: Dataset, spec: str) -> Dataset:
    """Refuse a set without samples at load, before a command trains or measures on it."""
    if len(ds) == 0:
        raise DataError(
            f"data set {spec!r} holds no samples",
            hint="check the file has rows / records / arrays with at least one sample",
        )
    return ds
