"""Small, fast settings and data for the monitoring tests."""

from __future__ import annotations

import numpy as np
import pytest

from edgeloop.monitoring import MonitorConfig

# Fewer, shorter bootstrap streams than the default: a fit takes ~0.1 s instead of ~1 s.
FAST = MonitorConfig(replicates=24, calibration_length=1000, alarms_per_1000=0.05)


@pytest.fixture
def fast() -> MonitorConfig:
    return FAST


@pytest.fixture
def gaussian_reference() -> np.ndarray:
    """500 rows of 6 correlated Gaussian features (seeded)."""
    rng = np.random.default_rng(7)
    mix = rng.normal(size=(6, 6)) / 3 + np.eye(6)
    return rng.normal(size=(500, 6)) @ mix
