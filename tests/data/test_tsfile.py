"""The .ts reader: the archive's format, and errors that name file and line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tests.data.samples import write_text

from edgeloop.core.errors import DataError, NotFoundError
from edgeloop.data import Modality, load_data
from edgeloop.data.tsfile import read_ts

HEADER = """# two tiny samples
@problemName Tiny
@timeStamps false
@univariate false
@dimensions 2
@equalLength true
@seriesLength 3
@classLabel true up down
@data
"""


def ts_file(tmp_path: Path, rows: str, header: str = HEADER) -> Path:
    return write_text(tmp_path / "tiny.ts", header + rows)


def test_reads_dimensions_lengths_labels_and_missing_values(tmp_path: Path) -> None:
    ts = read_ts(ts_file(tmp_path, "1,2,3:4,5,6:up\n0.5,?,1:7,8,9:down\n"))
    assert ts.problem == "Tiny"
    assert ts.x.shape == (2, 2, 3) and ts.x.dtype == np.float32
    assert ts.labels == ("up", "down") and ts.declared_classes == ("up", "down")
    assert ts.x[0, 1].tolist() == [4.0, 5.0, 6.0]
    assert np.isnan(ts.x[1, 0, 1])


def test_load_data_reads_ts_as_signal(tmp_path: Path) -> None:
    ds = load_data(str(ts_file(tmp_path, "1,2,3:4,5,6:up\n3,2,1:6,5,4:down\n")))
    assert ds.modality is Modality.SIGNAL and ds.classes == ("down", "up")
    assert ds.y.tolist() == [1, 0]


@pytest.mark.parametrize(
    ("rows", "line", "words"),
    [
        ("1,2,3:up\n", 10, "dimensions"),
        ("1,2,3:4,5:up\n", 10, "ragged"),
        ("1,2,3:4,5,6:sideways\n", 10, "'sideways'"),
        ("1,2,3:4,5,6:up\n1,x,3:4,5,6:down\n", 11, "non-number"),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path: Path, rows: str, line: int, words: str) -> None:
    path = ts_file(tmp_path, rows)
    with pytest.raises(DataError) as err:
        read_ts(path)
    assert f"{path}:{line}" in err.value.message
    assert words in err.value.message


def test_timestamps_and_unlabelled_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="timeStamps"):
        read_ts(
            ts_file(tmp_path, "1:up\n", HEADER.replace("@timeStamps false", "@timeStamps true"))
        )
    with pytest.raises(DataError, match="classLabel"):
        read_ts(ts_file(tmp_path, "1:up\n", HEADER.replace("@classLabel true up down", "")))


def test_no_data_and_no_file(tmp_path: Path) -> None:
    path = ts_file(tmp_path, "")
    with pytest.raises(DataError) as err:
        read_ts(path)
    assert str(path) in err.value.message and "no samples" in err.value.message
    with pytest.raises(NotFoundError):
        read_ts(tmp_path / "absent.ts")
