"""Cleaning counts exactly what it did, and leaves clean real data untouched."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgeloop.core.errors import ConfigError, DataError
from edgeloop.data import ClipScope, Dataset, Imputation, Modality, clean, load_bundled

NAN, INF = float("nan"), float("inf")


@pytest.fixture
def messy() -> Dataset:
    """Ten rows: two gaps + one inf, one gross outlier, one exact duplicate, one conflict."""
    rows = [
        (1, 10, 0),
        (2, 11, 0),
        (3, 12, 1),
        (4, 13, 1),
        (5, NAN, 0),
        (NAN, 15, 1),
        (1e6, 16, 0),  # gross outlier in column 0
        (2, 11, 0),  # exact duplicate of row 1
        (3, 12, 0),  # same features as row 2, other label: a conflict
        (6, INF, 1),
    ]
    x = np.array([r[:2] for r in rows], dtype=np.float32)
    y = np.array([r[2] for r in rows], dtype=np.int64)
    return Dataset("messy", x, y, ("a", "b"), Modality.TABULAR)


def test_counts_per_action_on_a_crafted_set(messy: Dataset) -> None:
    out, report = clean(messy)
    assert report.samples_in == 10 and report.samples_out == 9 == len(out)
    assert report.duplicates_dropped == 1
    assert report.label_conflicts == 2
    assert report.missing_values == 3 and report.samples_with_missing == 3
    assert report.clipped_values == 1 and report.samples_clipped == 1
    assert report.clip_scope is ClipScope.COLUMN and report.imputation is Imputation.MEDIAN
    assert np.isfinite(out.x).all()
    # Column 0 after dropping the duplicate: median 3.5, MAD 1.5 (the 1e6 does not move them).
    assert out.x[6, 0] == pytest.approx(3.5 + 50 * 1.4826 * 1.5, rel=1e-6)
    # Row 5's gap gets column 0's median (3.5); rows 4 and 9 (now 8) get column 1's (12).
    assert out.x[5, 0] == pytest.approx(3.5)
    assert out.x[4, 1] == pytest.approx(12.0) and out.x[8, 1] == pytest.approx(12.0)
    assert report.input_hash == messy.content_hash and report.output_hash == out.content_hash
    assert json.loads(json.dumps(report.to_dict()))["duplicates_dropped"] == 1


def test_input_is_not_modified(messy: Dataset) -> None:
    before = messy.x.copy()
    clean(messy)
    assert np.array_equal(messy.x, before, equal_nan=True)


def test_other_imputations_and_no_clipping(messy: Dataset) -> None:
    zero, r0 = clean(messy, impute="zero", clip_z=None)
    assert zero.x[5, 0] == 0.0 and r0.clipped_values == 0 and r0.clip_z is None
    assert zero.x[6, 0] == pytest.approx(1e6)
    mean, _ = clean(messy, impute=Imputation.MEAN, clip_z=None)
    finite = [1, 2, 3, 4, 5, 1e6, 3, 6]
    assert mean.x[5, 0] == pytest.approx(sum(finite) / len(finite), rel=1e-6)


def test_a_lower_threshold_clips_more(messy: Dataset) -> None:
    _, report = clean(messy, clip_z=1.0)
    assert report.clipped_values > 1


@pytest.mark.parametrize(
    ("kwargs", "words"), [({"impute": "mode"}, "'mode'"), ({"clip_z": -1.0}, "-1.0")]
)
def test_bad_settings_are_config_errors(
    messy: Dataset, kwargs: dict[str, object], words: str
) -> None:
    with pytest.raises(ConfigError) as err:
        clean(messy, **kwargs)  # type: ignore[arg-type]
    assert words in err.value.message


def test_a_feature_missing_everywhere_is_named() -> None:
    x = np.array([[1, NAN, 3], [4, NAN, 6]], dtype=np.float32)
    ds = Dataset("gappy", x, np.array([0, 1]), ("a", "b"), Modality.TABULAR)
    with pytest.raises(DataError) as err:
        clean(ds)
    assert "feature (1,)" in err.value.message and err.value.hint


def test_constant_columns_are_not_clipped() -> None:
    x = np.array([[0, 1], [0, 2], [0, 3], [9, 4]], dtype=np.float32)
    _, report = clean(Dataset("c", x, np.zeros(4, np.int64), ("a",), Modality.TABULAR))
    assert report.groups_without_spread == 1 and report.clipped_values == 0


def test_images_clip_per_channel(images: Dataset) -> None:
    x = images.x.copy()
    x[3, 0, 2, 2] = 1e4  # a hot pixel
    out, report = clean(images.with_arrays(x, images.y))
    assert report.clip_scope is ClipScope.CHANNEL
    assert report.clipped_values == 1 and report.samples_clipped == 1
    assert out.x[3, 0, 2, 2] < 10
    untouched = np.ones(x.shape, dtype=bool)
    untouched[3, 0, 2, 2] = False
    assert np.array_equal(out.x[untouched], x[untouched])


def test_digits_come_out_unchanged() -> None:
    ds = load_bundled("digits")
    out, report = clean(ds)
    assert report.missing_values == 0 and report.duplicates_dropped == 0
    assert report.label_conflicts == 0 and report.clipped_values == 0
    assert np.array_equal(out.x, ds.x) and out.content_hash == ds.content_hash


@pytest.mark.parametrize("name", ["basic-motions", "mitdb-anomaly", "yahoo-anomaly"])
def test_default_threshold_leaves_real_signals_alone(name: str) -> None:
    ds = load_bundled(name)
    out, report = clean(ds)
    assert report.clipped_values == 0 and report.duplicates_dropped == 0
    assert np.array_equal(out.x, ds.x)


def test_an_empty_data_set_cleans_to_zero_counts() -> None:
    ds = Dataset("e", np.zeros((0, 3), np.float32), np.zeros(0, np.int64), ("a",), Modality.TABULAR)
    out, report = clean(ds)
    assert len(out) == 0 and report.samples_in == 0 and report.clipped_values == 0
