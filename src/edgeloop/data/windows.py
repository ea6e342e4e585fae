"""Labelled series -> fixed-length windows, the sample shape models and edge nodes consume.

Pure numpy: no I/O. Used for the bundled anomaly series; reusable for any sensor stream.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from edgeloop.core.errors import ConfigError, DataError

# 1.4826 * MAD estimates the standard deviation of normal data (MAD of N(0,1) is 1/1.4826);
# Rousseeuw & Croux, "Alternatives to the Median Absolute Deviation", JASA 88 (1993).
MAD_TO_SIGMA = 1.4826


def robust_standardize(series: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """``(v - median) / (1.4826 * MAD)`` over the whole series.

    Median and MAD rather than mean and std: the anomalies themselves (spikes, arrhythmic
    beats) would inflate a std and shrink every normal window. Labels are not used.

    Raises:
        DataError: the series is constant (MAD is 0), so it has no scale to normalise by.
    """
    median = float(np.median(series))
    scale = MAD_TO_SIGMA * float(np.median(np.abs(series - median)))
    if scale == 0.0:
        raise DataError(
            "the series has a median absolute deviation of 0 (mostly constant); cannot normalise",
            hint="check that the file holds the signal, not a constant column",
        )
    return (series - median) / scale


def sliding_windows(
    series: npt.NDArray[np.float64],
    point_labels: npt.NDArray[np.int64],
    window: int,
    stride: int,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Cut a 1-D series into windows ``(n, 1, window)``; a window is 1 if any point in it is.

    Windows start at ``0, stride, 2*stride, ...``; trailing points that do not fill a whole
    window are dropped, so ``n = (len(series) - window) // stride + 1``.

    Raises:
        ConfigError: ``window`` or ``stride`` is below 1.
        DataError: the series is shorter than one window, or labels do not match its length.
    """
    if window < 1 or stride < 1:
        raise ConfigError(
            f"window={window}, stride={stride}; both must be >= 1",
            hint="e.g. window=64, stride=32",
        )
    if series.ndim != 1 or point_labels.shape != series.shape:
        raise DataError(
            f"series of shape {series.shape} with labels of shape {point_labels.shape}; "
            "expected one label per point of a 1-D series"
        )
    if len(series) < window:
        raise DataError(
            f"the series has {len(series)} points, fewer than one window of {window}",
            hint="use a smaller window",
        )
    starts = np.arange(0, len(series) - window + 1, stride)
    index = starts[:, None] + np.arange(window)[None, :]
    x = series[index].astype(np.float32)[:, None, :]
    y = (point_labels[index] != 0).any(axis=1).astype(np.int64)
    return x, y
