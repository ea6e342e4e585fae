"""User data loaders on small files written here, and every bad input they must name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tests.data.samples import write_png, write_text

from edgeloop.core.errors import ConfigError, DataError, NotFoundError
from edgeloop.data import (
    Modality,
    load_csv,
    load_data,
    load_image_folder,
    load_jsonl,
    load_npz,
)

# ---------------------------------------------------------------- CSV


def test_csv_with_string_labels_and_missing_features(tmp_path: Path) -> None:
    path = write_text(
        tmp_path / "plant.csv",
        "temp,label,vib\n20.5,ok,0.1\n,fault,0.9\n21.0,ok,NaN\n\n22,fault,0.8\n",
    )
    ds = load_csv(path)
    assert ds.name == "plant" and ds.modality is Modality.TABULAR
    assert ds.x.shape == (4, 2) and ds.x.dtype == np.float32
    assert ds.classes == ("fault", "ok") and ds.y.tolist() == [1, 0, 1, 0]
    assert np.isnan(ds.x[1, 0]) and np.isnan(ds.x[2, 1])
    assert ds.x[3].tolist() == [22.0, 0.800000011920929]
    assert "temp, vib" in ds.description and ds.source == str(path)


def test_csv_integer_labels_sort_numerically(tmp_path: Path) -> None:
    path = write_text(tmp_path / "n.csv", "a,target\n1,10\n2,2\n3,2.0\n")
    ds = load_csv(path, label_column="target")
    assert ds.classes == ("2", "10") and ds.y.tolist() == [1, 0, 0]


@pytest.mark.parametrize(
    ("body", "line", "words"),
    [
        ("1,2,ok\n3,4\n", 3, "ragged"),
        ("1,2,ok\n3,hot,ok\n", 3, "column 'b' holds 'hot'"),
        ("1,2,ok\n3,4,\n", 3, "label is missing"),
        ("1,2,ok\n3,4,nan\n", 3, "NaN"),
        ("1,2,0.5\n", 2, "not a class"),
    ],
)
def test_csv_bad_rows_name_file_and_line(tmp_path: Path, body: str, line: int, words: str) -> None:
    path = write_text(tmp_path / "bad.csv", "a,b,label\n" + body)
    with pytest.raises(DataError) as err:
        load_csv(path)
    assert f"{path}:{line}" in err.value.message
    assert words in err.value.message
    assert err.value.hint


def test_csv_without_label_column_or_rows(tmp_path: Path) -> None:
    path = write_text(tmp_path / "x.csv", "a,b\n1,2\n")
    with pytest.raises(DataError) as err:
        load_csv(path)
    assert "'label'" in err.value.message and "['a', 'b']" in err.value.message
    empty = write_text(tmp_path / "e.csv", "a,label\n")
    with pytest.raises(DataError, match="0 rows"):
        load_csv(empty)


def test_missing_file_is_not_found(tmp_path: Path) -> None:
    for loader in (load_csv, load_npz, load_jsonl):
        with pytest.raises(NotFoundError) as err:
            loader(tmp_path / "absent.bin")
        assert "absent.bin" in err.value.message


# ---------------------------------------------------------------- NPZ


def test_npz_with_classes_and_image_shape(tmp_path: Path) -> None:
    path = tmp_path / "imgs.npz"
    x = np.arange(4 * 2 * 3 * 3, dtype=np.float64).reshape(4, 2, 3, 3)
    np.savez(path, x=x, y=np.array([0, 2, 1, 2]), classes=np.array(["cat", "dog", "owl"]))
    ds = load_npz(path)
    assert ds.modality is Modality.IMAGE and ds.x.dtype == np.float32
    assert ds.classes == ("cat", "dog", "owl") and ds.y.tolist() == [0, 2, 1, 2]
    assert np.array_equal(ds.x, x.astype(np.float32))


def test_npz_string_labels_give_signal_modality(tmp_path: Path) -> None:
    path = tmp_path / "sig.npz"
    np.savez(path, x=np.zeros((3, 2, 5)), y=np.array(["b", "a", "b"]))
    ds = load_npz(path)
    assert ds.modality is Modality.SIGNAL and ds.classes == ("a", "b")


@pytest.mark.parametrize(
    ("arrays", "words"),
    [
        ({"x": np.zeros((3, 2)), "y": np.zeros(2)}, "3 samples"),
        ({"x": np.zeros((3, 2))}, "['y']"),
        ({"x": np.zeros((2, 2)), "y": np.array([0.0, np.nan])}, "y[1]"),
        ({"x": np.zeros((2, 2)), "y": np.array([0, 5]), "classes": np.array(["a", "b"])}, "y[1]"),
        ({"x": np.array([["a", "b"]]), "y": np.zeros(1)}, "dtype"),
    ],
)
def test_npz_bad_arrays_name_file_and_problem(
    tmp_path: Path, arrays: dict[str, np.ndarray], words: str
) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError) as err:
        load_npz(path)
    assert str(path) in err.value.message and words in err.value.message


def test_npz_that_is_not_an_archive_or_needs_pickle(tmp_path: Path) -> None:
    text = write_text(tmp_path / "fake.npz", "not an archive")
    with pytest.raises(DataError, match="fake.npz"):
        load_npz(text)
    pickled = tmp_path / "obj.npz"
    np.savez(pickled, x=np.array([[1, "a"]], dtype=object), y=np.zeros(1))
    with pytest.raises(DataError, match="pickle"):
        load_npz(pickled)


# ---------------------------------------------------------------- image folders


def make_folder(root: Path, sizes: dict[str, int], side: int = 8) -> Path:
    for k, (name, n) in enumerate(sizes.items()):
        for i in range(n):
            pixels = np.full((side, side), 40 * k + i, dtype=np.uint8)
            write_png(root / name / f"{i:03d}.png", pixels)
    return root


def test_image_folder_grey_rgb_and_resize(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "shots", {"ok": 3, "crack": 2})
    (root / "ok" / "README.txt").write_text("ignored")
    grey = load_image_folder(root)
    assert grey.x.shape == (5, 1, 8, 8) and grey.classes == ("crack", "ok")
    assert grey.y.tolist() == [0, 0, 1, 1, 1]
    assert grey.x[0, 0, 0, 0] == pytest.approx(40 / 255)
    assert grey.x.min() >= 0 and grey.x.max() <= 1
    rgb = load_image_folder(root, size=(4, 6), grayscale=False)
    assert rgb.x.shape == (5, 3, 6, 4)
    assert load_data(str(root)).content_hash == grey.content_hash


def test_numeric_class_folders_sort_numerically(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "n", {"10": 1, "2": 1, "b": 1})
    assert load_image_folder(root).classes == ("2", "10", "b")


def test_class_folder_without_images_is_named(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "shots", {"ok": 2})
    (root / "dent").mkdir()
    with pytest.raises(DataError) as err:
        load_image_folder(root)
    assert "'dent'" in err.value.message and "no images" in err.value.message


def test_folder_without_class_folders(tmp_path: Path) -> None:
    write_png(tmp_path / "flat" / "a.png", np.zeros((4, 4)))
    with pytest.raises(DataError) as err:
        load_image_folder(tmp_path / "flat")
    assert "no class folders" in err.value.message and "flat" in err.value.message


def test_unreadable_image_is_named(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "shots", {"ok": 2})
    broken = write_text(root / "ok" / "broken.png", "this is not a png")
    with pytest.raises(DataError) as err:
        load_image_folder(root)
    assert str(broken) in err.value.message


def test_mixed_sizes_name_the_odd_file(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "shots", {"ok": 2})
    odd = write_png(root / "ok" / "zz.png", np.zeros((5, 7)))
    with pytest.raises(DataError) as err:
        load_image_folder(root)
    assert str(odd) in err.value.message and "7x5" in err.value.message
    assert load_image_folder(root, size=(8, 8)).x.shape == (3, 1, 8, 8)


def test_bad_size_and_missing_folder(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "shots", {"ok": 1})
    with pytest.raises(ConfigError, match=r"\(0, 4\)"):
        load_image_folder(root, size=(0, 4))
    with pytest.raises(NotFoundError):
        load_image_folder(tmp_path / "nowhere")


# ---------------------------------------------------------------- JSONL


def jsonl(path: Path, *records: object) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    return write_text(path, "\n".join(lines) + "\n")


def test_jsonl_captures_with_nulls_and_extra_keys(tmp_path: Path) -> None:
    path = jsonl(
        tmp_path / "cap.jsonl",
        {"features": [1, 2, None], "label": "idle", "device": "n1"},
        "",
        {"features": [4, 5, 6], "label": "busy"},
    )
    ds = load_jsonl(path)
    assert ds.x.shape == (2, 3) and ds.classes == ("busy", "idle")
    assert np.isnan(ds.x[0, 2]) and ds.y.tolist() == [1, 0]


def test_jsonl_nested_features_are_signals(tmp_path: Path) -> None:
    path = jsonl(
        tmp_path / "s.ndjson",
        {"v": [[1, 2, 3], [4, 5, 6]], "y": 0},
        {"v": [[0, 0, 0], [1, 1, 1]], "y": 1},
    )
    ds = load_jsonl(path, features_key="v", label_key="y")
    assert ds.modality is Modality.SIGNAL and ds.x.shape == (2, 2, 3)


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        ("{not json", "not valid JSON"),
        ({"features": [1, 2]}, "label 'label' is missing"),
        ({"features": [1, 2], "label": None}, "label 'label' is missing"),
        ('{"features": [1, 2], "label": NaN}', "NaN"),
        ({"features": [1, 2, 3], "label": "a"}, "ragged"),
        ({"features": [1, "x"], "label": "a"}, "not a number"),
        ({"feat": [1, 2], "label": "a"}, "no key 'features'"),
        ({"features": [[1, 2], [3]], "label": "a"}, "ragged"),
    ],
)
def test_jsonl_bad_lines_name_file_and_line(tmp_path: Path, bad: object, words: str) -> None:
    path = jsonl(tmp_path / "cap.jsonl", {"features": [0, 1], "label": "a"}, bad)
    with pytest.raises(DataError) as err:
        load_jsonl(path)
    assert f"{path}:2" in err.value.message
    assert words in err.value.message


# ---------------------------------------------------------------- load_data


def test_load_data_dispatches_by_name_suffix_and_folder(tmp_path: Path) -> None:
    csv_path = write_text(tmp_path / "t.csv", "a,label\n1,x\n2,y\n")
    assert load_data(str(csv_path)).modality is Modality.TABULAR
    npz_path = tmp_path / "t.npz"
    np.savez(npz_path, x=np.zeros((2, 3)), y=np.array([0, 1]))
    assert len(load_data(npz_path)) == 2
    jl = jsonl(tmp_path / "t.ndjson", {"features": [1], "label": 0}, {"features": [2], "label": 1})
    assert load_data(str(jl)).classes == ("0", "1")
    assert load_data("basic-motions").name == "basic-motions"


def test_load_data_unknown_spec_and_suffix(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError) as err:
        load_data("no-such-set")
    assert "'no-such-set'" in err.value.message and "digits" in err.value.message
    odd = write_text(tmp_path / "data.parquet", "x")
    with pytest.raises(ConfigError) as cerr:
        load_data(str(odd))
    assert "'.parquet'" in cerr.value.message and ".csv" in cerr.value.message
