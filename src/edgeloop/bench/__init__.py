"""Measurement: latency, throughput, peak memory, power and accuracy of one model on this machine.

:func:`benchmark` returns the :class:`~edgeloop.core.types.Measurement` the rest of the loop
stores; :func:`run_benchmark` returns it wrapped in a :class:`BenchReport` that also says how it
was taken (warm-up, inputs, whose RSS, the machine). See :mod:`edgeloop.bench.measure` for the
method.
"""

from __future__ import annotations

from edgeloop.bench.machine import Machine, describe_machine
from edgeloop.bench.measure import benchmark, measure, run_benchmark
from edgeloop.bench.power import PowerProbe, PowerReading, detect_power_probe
from edgeloop.bench.report import BenchConfig, BenchReport, RssScope

__all__ = [
    "BenchConfig",
    "BenchReport",
    "Machine",
    "PowerProbe",
    "PowerReading",
    "RssScope",
    "benchmark",
    "describe_machine",
    "detect_power_probe",
    "measure",
    "run_benchmark",
]
