"""Reference profiles as bytes: round trip, size bound, refusal of foreign or broken bytes."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from edgeloop.core.errors import DataError
from edgeloop.monitoring import DriftMonitor, MonitorConfig, ReferenceProfile


def _monitor(fast: MonitorConfig, shape: tuple[int, ...]) -> DriftMonitor:
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(10), size=500)
    x = rng.normal(size=(500, *shape))
    return DriftMonitor.fit(x, outputs=probs, labels=rng.integers(0, 10, 500), config=fast)


def test_a_profile_round_trips_and_monitors_the_same(fast: MonitorConfig) -> None:
    mon = _monitor(fast, (64,))
    data = mon.profile.to_bytes()
    back = ReferenceProfile.from_bytes(data)
    assert back.to_bytes() == data
    assert back.config == mon.profile.config and back.n == 500
    out, back_out = mon.profile.outputs, back.outputs
    assert out is not None and back_out is not None
    assert back_out.atc_threshold == out.atc_threshold
    np.testing.assert_array_equal(back.input.model.basis, mon.profile.input.model.basis)
    stream = np.random.default_rng(1).normal(size=(200, 64)) + 0.3
    again = DriftMonitor.from_profile(data)
    assert again.update_many(stream) == mon.update_many(stream)
    assert again.scores == mon.scores


@pytest.mark.parametrize(("shape", "bound"), [((64,), 64 * 1024), ((1, 28, 28), 64 * 1024)])
def test_a_profile_stays_small(fast: MonitorConfig, shape: tuple[int, ...], bound: int) -> None:
    assert _monitor(fast, shape).profile.size_bytes < bound


def test_profile_bytes_are_a_plain_npz_without_pickles(fast: MonitorConfig) -> None:
    data = _monitor(fast, (8,)).profile.to_bytes()
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        names = z.namelist()
    assert "header.npy" in names and "input.basis.npy" in names
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        assert all(npz[name].dtype != object for name in npz.files)


def test_broken_or_foreign_bytes_are_refused(fast: MonitorConfig) -> None:
    with pytest.raises(DataError, match="not a readable reference profile"):
        ReferenceProfile.from_bytes(b"not a profile")
    buffer = io.BytesIO()
    np.savez(buffer, low=np.zeros(3))
    with pytest.raises(DataError, match="not a readable reference profile"):
        ReferenceProfile.from_bytes(buffer.getvalue())


def test_another_format_version_is_refused(fast: MonitorConfig) -> None:
    data = _monitor(fast, (4,)).profile.to_bytes()
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    header = arrays["header"].tobytes().decode().replace('"version": 1', '"version": 99')
    arrays["header"] = np.frombuffer(header.encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    with pytest.raises(DataError, match="version 99"):
        ReferenceProfile.from_bytes(buffer.getvalue())
