"""The quickstart's monitor stage without processes: its stream, its skips, its drawings.

The stage itself runs on a real fleet in tests/pipeline/test_quickstart.py (the whole quickstart
as `make demo` runs it: one agent process streams, the control plane stores the event).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeloop.core.errors import ConfigError
from edgeloop.core.settings import Settings
from edgeloop.data.dataset import Dataset, Modality, Task
from edgeloop.monitoring.outputs import distributions
from edgeloop.pipeline.fleet import FleetStageResult
from edgeloop.pipeline.monitor import Shift, monitor_stage, stream
from edgeloop.pipeline.monitor_report import monitor_html, plot_monitor
from edgeloop.pipeline.quickstart import QuickstartConfig, quickstart_stages
from edgeloop.pipeline.stage import Outcome, Outcomes, Skipped


def _test_split(n: int = 30) -> Dataset:
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 1, (n, 1, 2, 2)).astype(np.float32)
    return Dataset("toy", x, np.arange(n) % 3, ("a", "b", "c"), Modality.IMAGE, Task.CLASSIFICATION)


def test_the_stream_is_the_split_then_the_split_shifted() -> None:
    test = _test_split()
    shift = Shift(gain=0.5, offset=0.3)
    xs, ys, shift_at = stream(test, shift, seed=0)
    assert shift_at == len(test) and xs.shape == (2 * len(test), 1, 2, 2)
    span = float(test.x.max() - test.x.min())

    # Each pass holds every sample once with its own label; the second one shifted.
    def pairs(x: np.ndarray[Any, Any], y: np.ndarray[Any, Any]) -> set[tuple[int, bytes]]:
        return {(int(label), row.tobytes()) for row, label in zip(x, y, strict=True)}

    assert pairs(xs[:shift_at], ys[:shift_at]) == pairs(test.x, test.y)
    shifted = (test.x * 0.5 + 0.3 * span).astype(np.float32)
    assert pairs(xs[shift_at:], ys[shift_at:]) == pairs(shifted, test.y)
    assert not np.array_equal(stream(test, shift, seed=1)[0], xs)  # the seed orders the passes


@pytest.mark.parametrize(
    ("gain", "offset", "match"),
    [(0.0, 0.1, "gain > 0"), (float("nan"), 0.0, "finite"), (1.0, 0.0, "changes nothing")],
)
def test_a_shift_that_cannot_be_detected_or_applied_is_refused(
    gain: float, offset: float, match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        Shift(gain=gain, offset=offset)


def _fleet_done() -> Outcomes:
    """What the fleet stage hands on when it stopped its fleet (no ExitStack given)."""
    fleet = FleetStageResult((), {"ref": "m-edge:1"}, {}, live=None)
    return Outcomes((Outcome("fleet", fleet, 1.0),))


def test_without_a_running_fleet_the_stage_is_skipped_and_says_why(
    tmp_path: Path, home: Path
) -> None:
    assert monitor_stage(None, "m", _test_split(), tmp_path) == Skipped(
        "the fleet stage stopped its fleet (no running fleet was handed on)"
    )
    settings = Settings.load(home)
    stages = {s.name: s for s in quickstart_stages(tmp_path, settings, QuickstartConfig())}
    assert stages["monitor"].needs == ("fleet",)
    off = {
        s.name: s for s in quickstart_stages(tmp_path, settings, QuickstartConfig(monitor=False))
    }
    assert off["monitor"].run(_fleet_done()) == Skipped("turned off (--no-monitor)")


def _block(plot: Path) -> dict[str, Any]:
    alarm = {"delay_samples": 3, "kind": "input", "score": 160.0, "threshold": 97.0,
             "telemetry_id": "01a2-id", "created_at_node": "2026-12-07T00:29:56.799+00:00",
             "received_at_control": "2026-12-07T00:29:57+00:00"}  # fmt: skip
    acc = {"true": 0.99, "estimated": 0.98, "labelled": 269}
    return {
        "node": {"name": "node-1"}, "model": "m", "version": "1", "alarm": alarm,
        "stream": {"samples": 538, "shift_at": 269, "shift": {"name": "washed out"}},
        "false_alarms_before_shift": 0, "labels_note": "they stand in for a person's labels",
        "accuracy": {"before_shift": acc, "after_shift": {**acc, "true": 0.12}},
        "fleet_monitor": {"command": "edgeloop fleet monitor", "table": "│ m:1 │ drifting │"},
        "plot": str(plot),
    }  # fmt: skip


def test_the_plot_and_the_report_section_show_what_the_stage_read(tmp_path: Path) -> None:
    n = 40
    trace: dict[str, Any] = {
        "sample": [float(i) for i in range(0, 2 * n, 2)],
        "input": [0.3] * (n // 2) + [5.0] * (n // 2),
        "prediction": [None] * n,  # a kind the node did not score yet: a gap, no error
        "confidence": [0.2] * n,
        "accuracy": [None] + [0.95] * (n - 1),
        "estimated": [0.9] * n,
        "labelled": list(range(n)),
    }
    plot = tmp_path / "monitor_drift.png"
    plot_monitor(trace, n, n + 2, plot, title="node-1")
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = monitor_html(_block(plot))
    assert '<a href="monitor_drift.png">' in page and "data:image/png;base64," in page
    for text in ("3 samples after the shift", "01a2-id", "99.0% / 98.0%", "12.0% / 98.0%",
                 "stand in for a person", "│ m:1 │ drifting │"):  # fmt: skip
        assert text in page
    assert monitor_html({"skipped": "turned off"}) == "<h2>Monitor</h2><p>skipped: turned off</p>"
    assert monitor_html(None) == ""


def test_a_quantized_softmax_is_read_as_the_distribution_it_is() -> None:
    # A static-int8 model's softmax output: uint8 steps of 1/255, rows summing to 0.992-0.996.
    probs = np.array([[0.0, 252 / 255, 1 / 255, 0.0], [64 / 255, 64 / 255, 63 / 255, 62 / 255]])
    out, ok = distributions(probs)
    assert ok.all()
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-12)
    assert (out.argmax(axis=1) == probs.argmax(axis=1)).all()
    logits = np.array([[2.0, -1.0, 0.5, 0.1], [0.4, 0.3, 0.2, 0.05]])  # the 2nd sums to 0.95
    _, ok = distributions(logits)
    assert not ok.any()
