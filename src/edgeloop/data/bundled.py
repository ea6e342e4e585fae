"""Real data sets that ship inside installed packages, so a first run works offline.

Each set is registered by short name with what it is, where it comes from and how it is cut
into samples. Loading reads the package's own data file; sktime's files are parsed here
(``tsfile``) after locating the package with ``importlib.util.find_spec``, which does not import
sktime (that import alone takes seconds). scikit-learn is imported only to load ``digits``.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edgeloop.core.errors import (
    DataError,
    MissingDependencyError,
    NotFoundError,
    require,
)
from edgeloop.data.classes import encode_labels
from edgeloop.data.dataset import Dataset, Modality, Task
from edgeloop.data.tsfile import read_ts
from edgeloop.data.windows import robust_standardize, sliding_windows

EXTRA = "datasets"
# Anomaly series are cut into windows of 64 points every 32 points (half overlap), one shape
# for both series so the same small models fit. Measured by autocorrelation, 64 points span
# ~2.7 daily cycles of the yahoo series (period 24) and ~1/5 of a heartbeat of the ECG
# (period ~296 points): enough to see a spike or a malformed QRS, and the ECG still yields
# ~230 windows. Half overlap puts every point in two windows without making neighbours copies.
ANOMALY_WINDOW = 64
ANOMALY_STRIDE = 32


@dataclass(frozen=True, slots=True)
class _Arrays:
    x: npt.NDArray[np.float32]
    y: npt.NDArray[np.int64]
    classes: tuple[str, ...]
    sources: tuple[Path, ...]


@dataclass(frozen=True, slots=True)
class _Entry:
    name: str
    modality: Modality
    task: Task
    description: str
    citation: str
    read: Callable[[str], _Arrays]


@dataclass(frozen=True, slots=True)
class BundledInfo:
    """What ``edgeloop data list`` shows for one bundled set, read from its files.

    ``unavailable`` says why the set cannot be loaded on this machine (a missing package);
    the figures are then ``None``.
    """

    name: str
    modality: Modality
    task: Task
    description: str
    citation: str
    samples: int | None
    sample_shape: tuple[int, ...] | None
    classes: tuple[str, ...]
    sources: tuple[str, ...]
    content_hash: str | None
    unavailable: str | None = None

    def __post_init__(self) -> None:
        if self.unavailable is None and (self.samples is None or not self.sources):
            raise DataError(
                f"bundled set {self.name!r}: an available set needs its sample count and sources"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "modality": self.modality.value,
            "task": self.task.value,
            "samples": self.samples,
            "sample_shape": None if self.sample_shape is None else list(self.sample_shape),
            "classes": list(self.classes),
            "sources": list(self.sources),
            "content_hash": self.content_hash,
            "description": self.description,
            "citation": self.citation,
            "unavailable": self.unavailable,
        }


def package_dir(package: str, purpose: str) -> Path:
    """The folder of an installed package, found without importing it.

    Raises:
        MissingDependencyError: the package is not installed (names the ``datasets`` extra).
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(package, EXTRA, purpose)
    return Path(next(iter(spec.submodule_search_locations)))


def _package_file(package: str, relative: str, name: str) -> Path:
    path = package_dir(package, f"the bundled data set {name!r}") / relative
    if not path.is_file():
        raise NotFoundError(
            f"bundled data set {name!r}: {path} is missing from the installed {package}",
            hint=f"reinstall it: pip install --force-reinstall 'edgeloop[{EXTRA}]'",
        )
    return path


def _read_digits(name: str) -> _Arrays:
    source = _package_file("sklearn", "datasets/data/digits.csv.gz", name)
    datasets = require("sklearn.datasets", EXTRA, f"the bundled data set {name!r}")
    bunch = datasets.load_digits()
    # Pixels are counts 0..16 (4x4 blocks of a 32x32 bitmap); /16 puts them in [0, 1].
    x = (np.asarray(bunch.data, dtype=np.float32) / np.float32(16.0)).reshape(-1, 1, 8, 8)
    y = np.asarray(bunch.target, dtype=np.int64)
    return _Arrays(x, y, tuple(str(c) for c in bunch.target_names), (source,))


def _read_basic_motions(name: str) -> _Arrays:
    files = [
        _package_file("sktime", f"datasets/data/BasicMotions/BasicMotions_{part}.ts", name)
        for part in ("TRAIN", "TEST")
    ]
    parts = [read_ts(f) for f in files]
    y, classes = encode_labels([label for p in parts for label in p.labels])
    return _Arrays(np.concatenate([p.x for p in parts]), y, classes, tuple(files))


def _read_anomaly_series(file: str) -> Callable[[str], _Arrays]:
    def read(name: str) -> _Arrays:
        path = _package_file("sktime", f"datasets/data/{file}", name)
        values, labels = _read_labelled_series(path)
        x, y = sliding_windows(robust_standardize(values), labels, ANOMALY_WINDOW, ANOMALY_STRIDE)
        return _Arrays(x, y, ("normal", "anomaly"), (path,))

    return read


def _read_labelled_series(path: Path) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    with path.open(encoding="utf-8") as f:
        header = f.readline().strip()
    if header != "data,label":
        raise DataError(f"{path}: header {header!r}, expected 'data,label'")
    try:
        table = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise DataError(f"{path}: not a two-column numeric table ({exc})") from exc
    labels = table[:, 1]
    if not np.isin(labels, (0.0, 1.0)).all():
        raise DataError(f"{path}: labels must be 0 (normal) or 1 (anomaly)")
    return table[:, 0], labels.astype(np.int64)


_WINDOWING = (
    f"cut into windows of {ANOMALY_WINDOW} points every {ANOMALY_STRIDE} points (trailing points "
    "dropped); a window is 'anomaly' if any of its points is labelled anomalous; values are "
    "standardised by the median and 1.4826*MAD of the whole series (labels not used)."
)

_REGISTRY: dict[str, _Entry] = {
    e.name: e
    for e in (
        _Entry(
            "digits",
            Modality.IMAGE,
            Task.CLASSIFICATION,
            "Handwritten digits 0-9 as 8x8 grey images, pixels scaled to [0, 1] (counts / 16).",
            "UCI Optical Recognition of Handwritten Digits (Alpaydin & Kaynak, 1998), test part as "
            "shipped by scikit-learn (sklearn.datasets.load_digits).",
            _read_digits,
        ),
        _Entry(
            "basic-motions",
            Modality.SIGNAL,
            Task.CLASSIFICATION,
            "Smart-watch 3-D accelerometer + 3-D gyroscope, 100 steps at 10 Hz, while standing, "
            "walking, running or playing badminton. The archive's TRAIN and TEST files are merged; "
            "edgeloop's stratified split makes the train/val/test parts.",
            "BasicMotions, UEA multivariate time series classification archive (Bagnall et al., "
            "2018, arXiv:1811.00075), as shipped by sktime.",
            _read_basic_motions,
        ),
        _Entry(
            "mitdb-anomaly",
            Modality.SIGNAL,
            Task.ANOMALY,
            "ECG excerpt (one lead) with a labelled anomalous stretch of beats, " + _WINDOWING,
            "MIT-BIH Arrhythmia Database (Moody & Mark, PhysioNet, doi:10.13026/C2F305) via the "
            "TSB-UAD benchmark (Paparrizos et al., PVLDB 15, 2022), as shipped by sktime.",
            _read_anomaly_series("mitdb/mitdb.csv"),
        ),
        _Entry(
            "yahoo-anomaly",
            Modality.SIGNAL,
            Task.ANOMALY,
            "Univariate metric (period of 24 points) with labelled point anomalies, " + _WINDOWING,
            "Yahoo! Webscope S5 labeled anomaly detection dataset (Laptev, Amizadeh & Billawala, "
            "2015) via the TSB-UAD benchmark (Paparrizos et al., PVLDB 15, 2022), as shipped by "
            "sktime.",
            _read_anomaly_series("yahoo/yahoo.csv"),
        ),
    )
}


def bundled_names() -> tuple[str, ...]:
    """The short names of the bundled sets (no file is read)."""
    return tuple(_REGISTRY)


def load_bundled(name: str) -> Dataset:
    """Load a bundled data set by short name.

    Raises:
        NotFoundError: the name is unknown (the message lists the known names), or the
            package's data file is missing.
        MissingDependencyError: scikit-learn / sktime is not installed (extra ``datasets``).
        DataError: the package's file is malformed.
    """
    entry = _REGISTRY.get(name)
    if entry is None:
        raise NotFoundError(
            f"no bundled data set named {name!r}; known: {', '.join(_REGISTRY)}",
            hint="run `edgeloop data list`, or give a path to your own data",
        )
    arrays = entry.read(name)
    return Dataset(
        name=name,
        x=arrays.x,
        y=arrays.y,
        classes=arrays.classes,
        modality=entry.modality,
        task=entry.task,
        source=" + ".join(str(p) for p in arrays.sources),
        description=f"{entry.description} Source: {entry.citation}",
    )


def list_bundled() -> list[BundledInfo]:
    """Every bundled set with its figures read from the installed files.

    A set whose package is missing is listed with ``unavailable`` saying what to install.
    """
    return [_info(name) for name in _REGISTRY]


@functools.cache
def _info(name: str) -> BundledInfo:
    """Cached: loading every set once per process is enough to describe it."""
    entry = _REGISTRY[name]
    unread = BundledInfo(
        name=name,
        modality=entry.modality,
        task=entry.task,
        description=entry.description,
        citation=entry.citation,
        samples=None,
        sample_shape=None,
        classes=(),
        sources=(),
        content_hash=None,
        unavailable="not read yet",
    )
    try:
        ds = load_bundled(name)
    except (MissingDependencyError, NotFoundError) as exc:
        return dataclasses.replace(unread, unavailable=str(exc))
    return dataclasses.replace(
        unread,
        samples=len(ds),
        sample_shape=ds.sample_shape,
        classes=ds.classes,
        sources=tuple(ds.source.split(" + ")),
        content_hash=ds.content_hash,
        unavailable=None,
    )
