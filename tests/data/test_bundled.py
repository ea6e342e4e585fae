"""The bundled sets load from the installed package files, with the shapes and counts they hold."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeloop.core.errors import MissingDependencyError, NotFoundError
from edgeloop.data import Modality, Task, bundled, list_bundled, load_bundled
from edgeloop.data.bundled import ANOMALY_STRIDE, ANOMALY_WINDOW, package_dir

NAMES = ("digits", "basic-motions", "mitdb-anomaly", "yahoo-anomaly")


def sources(name: str) -> list[Path]:
    return [Path(p) for p in load_bundled(name).source.split(" + ")]


@pytest.mark.parametrize("name", NAMES)
def test_each_bundled_set_is_typed_sourced_and_hashes_stably(name: str) -> None:
    first, second = load_bundled(name), load_bundled(name)
    assert first.x.dtype == np.float32 and first.y.dtype == np.int64
    assert np.isfinite(first.x).all()
    assert first.content_hash == second.content_hash
    assert len(first.content_hash) == 64
    assert all(p.is_file() for p in sources(name))
    assert sum(first.class_counts().values()) == len(first)
    assert "Source:" in first.description


def test_digits_are_8x8_images_scaled_to_unit_range() -> None:
    ds = load_bundled("digits")
    assert ds.x.shape == (1797, 1, 8, 8)
    assert ds.modality is Modality.IMAGE and ds.task is Task.CLASSIFICATION
    assert ds.classes == tuple(str(d) for d in range(10))
    assert ds.x.min() == 0.0 and ds.x.max() == 1.0
    # Pixels are counts 0..16 divided by 16, so x * 16 is integral.
    assert np.array_equal(ds.x * 16, np.round(ds.x * 16))
    assert ds.class_counts()["0"] == 178 and ds.class_counts()["8"] == 174
    assert sources("digits")[0].name == "digits.csv.gz"


def test_basic_motions_merges_train_and_test_files() -> None:
    ds = load_bundled("basic-motions")
    assert ds.x.shape == (80, 6, 100)
    assert ds.modality is Modality.SIGNAL
    assert ds.class_counts() == {"Badminton": 20, "Running": 20, "Standing": 20, "Walking": 20}
    assert [p.name for p in sources("basic-motions")] == [
        "BasicMotions_TRAIN.ts",
        "BasicMotions_TEST.ts",
    ]
    # First line of the TRAIN file: a 'Standing' sample whose first value is 0.079106.
    assert ds.x[0, 0, 0] == pytest.approx(0.079106)
    assert ds.classes[ds.y[0]] == "Standing"
    assert "merged" in ds.description


def read_series(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with path.open() as f:
        rows = list(csv.DictReader(f))
    return np.array([float(r["data"]) for r in rows]), np.array([int(r["label"]) for r in rows])


@pytest.mark.parametrize("name", ["mitdb-anomaly", "yahoo-anomaly"])
def test_anomaly_series_are_cut_into_labelled_standardised_windows(name: str) -> None:
    ds = load_bundled(name)
    values, labels = read_series(sources(name)[0])
    n = (len(values) - ANOMALY_WINDOW) // ANOMALY_STRIDE + 1
    assert ds.x.shape == (n, 1, ANOMALY_WINDOW)
    assert ds.task is Task.ANOMALY and ds.classes == ("normal", "anomaly")
    starts = range(0, n * ANOMALY_STRIDE, ANOMALY_STRIDE)
    expected = [int(labels[s : s + ANOMALY_WINDOW].any()) for s in starts]
    assert ds.y.tolist() == expected
    assert 0 < sum(expected) < n
    median = np.median(values)
    scale = 1.4826 * np.median(np.abs(values - median))
    last = starts[-1]
    window = (values[last : last + ANOMALY_WINDOW] - median) / scale
    assert np.allclose(ds.x[-1, 0], window, atol=1e-5)


def test_mitdb_window_count_is_the_measured_one() -> None:
    ds = load_bundled("mitdb-anomaly")
    assert len(ds) == 233
    assert ds.class_counts() == {"normal": 220, "anomaly": 13}


def test_unknown_name_lists_the_known_names() -> None:
    with pytest.raises(NotFoundError) as err:
        load_bundled("mnist")
    assert "'mnist'" in err.value.message
    for name in NAMES:
        assert name in err.value.message


def test_list_bundled_reports_what_the_files_hold() -> None:
    infos = {i.name: i for i in list_bundled()}
    assert tuple(infos) == NAMES
    digits = infos["digits"]
    assert digits.samples == 1797 and digits.sample_shape == (1, 8, 8)
    assert digits.content_hash == load_bundled("digits").content_hash
    assert infos["basic-motions"].classes == ("Badminton", "Running", "Standing", "Walking")
    assert all(i.unavailable is None for i in infos.values())
    json.dumps([i.to_dict() for i in infos.values()])


def test_missing_package_names_the_datasets_extra() -> None:
    with pytest.raises(MissingDependencyError) as err:
        package_dir("edgeloop_no_such_package", "the bundled data set 'x'")
    assert err.value.extra == "datasets"
    assert "edgeloop_no_such_package" in err.value.message
    assert "edgeloop[datasets]" in (err.value.hint or "")


def test_digits_without_sklearn_raises_and_lists_as_unavailable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # None in sys.modules makes `import sklearn.datasets` fail as if it were not installed.
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    bundled._info.cache_clear()
    try:
        with pytest.raises(MissingDependencyError) as err:
            load_bundled("digits")
        assert "digits" in err.value.message
        info = {i.name: i for i in list_bundled()}["digits"]
        assert info.samples is None and "edgeloop[datasets]" in (info.unavailable or "")
    finally:
        bundled._info.cache_clear()


def test_loading_basic_motions_never_imports_sktime_or_sklearn() -> None:
    code = (
        "import sys; from edgeloop.data import load_data; "
        "assert not {'sklearn', 'PIL', 'torch'} & set(sys.modules), 'heavy import'; "
        "load_data('basic-motions'); load_data('mitdb-anomaly'); "
        "print(sorted({'sktime', 'sklearn', 'torch'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
