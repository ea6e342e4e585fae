"""Monitoring on the node: drift, data quality and performance, as pure computation.

Arrays in, decisions out: no HTTP, no torch, no disk (a profile is saved and loaded as bytes
by the caller). The streaming path needs numpy only. See docs/monitoring.md.
"""

from edgeloop.monitoring.alarm import AlarmKind, DriftAlarm, FeatureContribution, ScorePart
from edgeloop.monitoring.config import MonitorConfig
from edgeloop.monitoring.drift import DriftMonitor
from edgeloop.monitoring.performance import PerformanceReport, atc_threshold
from edgeloop.monitoring.profile import OutputProfile, ReferenceProfile, build_profile
from edgeloop.monitoring.quality import QualityReport
from edgeloop.monitoring.registry import (
    DEFAULT_DETECTOR,
    DetectorSpec,
    detector_names,
    get_detector,
    register_detector,
)

__all__ = [
    "DEFAULT_DETECTOR",
    "AlarmKind",
    "DetectorSpec",
    "DriftAlarm",
    "DriftMonitor",
    "FeatureContribution",
    "MonitorConfig",
    "OutputProfile",
    "PerformanceReport",
    "QualityReport",
    "ReferenceProfile",
    "ScorePart",
    "atc_threshold",
    "build_profile",
    "detector_names",
    "get_detector",
    "register_detector",
]
