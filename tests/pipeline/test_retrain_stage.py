"""The quickstart's retrain stage without processes: its figures, its field, its skips, its rows.

The stage itself runs across real processes in tests/pipeline/test_quickstart.py.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeloop.core.errors import ConfigError
from edgeloop.core.settings import Settings
from edgeloop.data.dataset import Dataset, Modality, Splits, Task
from edgeloop.pipeline.fleet import FleetStageResult
from edgeloop.pipeline.monitor import Shift
from edgeloop.pipeline.quickstart import QuickstartConfig, quickstart_stages
from edgeloop.pipeline.retrain_stage import Champion, field_split, field_stream, retrain_stage
from edgeloop.pipeline.retrain_stage_figures import Accuracy, recovery
from edgeloop.pipeline.retrain_stage_report import retrain_html, retrain_rows
from edgeloop.pipeline.stage import Outcome, Outcomes, Skipped


def _set(name: str, n: int, start: int) -> Dataset:
    x = (np.arange(n * 4, dtype=np.float32).reshape(n, 1, 2, 2) + start * 4) / 1000
    return Dataset(name, x, np.arange(n) % 3, ("a", "b", "c"), Modality.IMAGE, Task.CLASSIFICATION)


def _acc(original: int, shifted: int, n: int = 200) -> Accuracy:
    return Accuracy("1", original, shifted, n, "digits test")


def test_the_recovered_share_is_what_the_shift_cost_won_back() -> None:
    # Before: 196/200 as is, 40/200 shifted (the shift cost 78 pp); after: 194 and 190.
    figures = recovery(_acc(196, 40), _acc(194, 190))
    assert figures["shift_cost_pp"] == 78.0 and figures["won_back_pp"] == 75.0
    assert figures["recovered_share"] == round(150 / 156, 4)
    assert figures["original_loss_pp"] == 1.0  # exactly the goal's 1 pp: met
    assert figures["goals"] == {"recovered_share >= 0.90": True, "original_loss_pp <= 1": True}
    worse = recovery(_acc(196, 40), _acc(192, 100))
    assert worse["goals"] == {"recovered_share >= 0.90": False, "original_loss_pp <= 1": False}
    assert recovery(_acc(196, 40), _acc(198, 41))["original_loss_pp"] == -1.0  # it gained


def test_a_shift_that_cost_nothing_has_nothing_to_recover_and_says_so() -> None:
    figures = recovery(_acc(190, 195), _acc(190, 195))
    assert figures["recovered_share"] is None
    assert "cost nothing" in figures["recovered_share_note"]
    assert figures["goals"]["recovered_share >= 0.90"] is None


def test_counts_that_cannot_be_accuracies_are_refused() -> None:
    with pytest.raises(ConfigError, match="original=201"):
        _acc(201, 0)
    with pytest.raises(ConfigError, match="samples > 0"):
        Accuracy("1", 0, 0, 0, "x")
    with pytest.raises(ConfigError, match="different splits"):
        recovery(_acc(10, 5, 20), _acc(10, 5, 30))


def test_the_field_is_drawn_from_train_and_validation_only_and_shifted() -> None:
    splits = Splits(_set("t", 30, 0), _set("v", 10, 30), _set("test", 10, 40), seed=0)
    field = field_split(splits)
    assert len(field) == 40 and field.classes == ("a", "b", "c")
    shift = Shift(gain=0.5, offset=0.3)
    xs, ys = field_stream(field, shift, span=2.0, n=25, seed=0)
    assert xs.shape == (25, 1, 2, 2) and xs.dtype == np.float32
    unshifted = (xs - 0.3 * 2.0) / 0.5
    rows = {r.tobytes(): i for i, r in enumerate(np.round(field.x, 5))}
    picked = [rows[r.tobytes()] for r in np.round(unshifted, 5)]
    assert len(set(picked)) == 25  # without replacement, every row from train or validation
    assert all(int(ys[k]) == int(field.y[i]) for k, i in enumerate(picked))
    test_rows = {r.tobytes() for r in np.round(splits.test.x, 5)}
    assert not test_rows & {r.tobytes() for r in np.round(unshifted, 5)}
    assert np.array_equal(field_stream(field, shift, 2.0, 25, 0)[0], xs)  # seeded
    assert not np.array_equal(field_stream(field, shift, 2.0, 25, 1)[0], xs)
    assert len(field_stream(field, shift, 2.0, 500, 0)[0]) == 40  # at most the whole field


def test_without_a_fleet_a_parent_or_torch_the_stage_is_skipped_and_says_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    test = _set("test", 10, 0)
    champion = Champion("m:1", "m-edge:1")
    assert retrain_stage(None, champion, test, test) == Skipped(
        "the fleet stage stopped its fleet (no running fleet was handed on)"
    )
    fleet: Any = object()  # never reached: the stage stops at the first missing piece
    assert retrain_stage(fleet, Champion(None, "m-edge:1"), test, test) == Skipped(
        "the fleet's registry has no fp32 parent of the served variant to retrain"
    )
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a)
    )
    assert retrain_stage(fleet, champion, test, test) == Skipped(
        "not installed: torch (pip install 'edgeloop[train]')"
    )


def test_the_stage_follows_the_monitor_stage_and_can_be_turned_off(
    tmp_path: Path, home: Path
) -> None:
    settings = Settings.load(home)
    stages = {s.name: s for s in quickstart_stages(tmp_path, settings, QuickstartConfig())}
    names = list(stages)
    assert names.index("retrain") == names.index("monitor") + 1
    assert stages["retrain"].needs == ("monitor",)
    off = {
        s.name: s for s in quickstart_stages(tmp_path, settings, QuickstartConfig(retrain=False))
    }
    fleet = FleetStageResult((), {"ref": "m-edge:1", "parent": "m:1"}, {}, live=None)
    done = Outcomes((Outcome("fleet", fleet, 1.0),))
    assert off["retrain"].run(done) == Skipped("turned off (--no-retrain)")


def _block() -> dict[str, Any]:
    return {
        "node": {"name": "node-1"},
        "labels_note": "they stand in for the labels a person would give",
        "field": {"samples": 300, "captured": 300, "labels": {"applied": 300}},
        "dataset": {"ref": "m-field:1", "samples": 300, "labelled": 300},
        "job": {"id": "0123456789abcdef", "epochs_run": 8, "reason": "promoted: <recent>"},
        "rollout": {"ref": "m-edge:3", "waves": [["node-1"], ["node-2", "node-3"]],
                    "state": "COMPLETED", "seconds": 9.5},
        "accuracy_before": {"original": 0.98, "shifted": 0.2},
        "accuracy_after": {"original": 0.975, "shifted": 0.95},
        "recovery": {"recovered_share": 0.9615, "shift_cost_pp": 78.0, "original_loss_pp": 0.5},
        "seconds": 61.2,
    }  # fmt: skip


def test_the_rows_and_the_section_show_what_the_stage_measured() -> None:
    rows = dict(retrain_rows(_block()))
    assert rows["shifted test split: before / after"] == "20.0% / 95.0%"
    assert rows["recovered of what the shift cost"] == "96.2% of 78.0 pp"
    assert rows["rollout m-edge:3 (node-1 then node-2+node-3)"] == "COMPLETED in 9.5 s"
    assert "standing in for a person's" in rows["data set m-field:1"]
    page = retrain_html(_block())
    assert "&lt;recent&gt;" in page and "<h2>Retrain</h2>" in page and "a person" in page
    refused = {**_block(), "rollout": {"skipped": "no challenger registered: refused"}}
    assert retrain_rows(refused)[-1] == ("rollout", "no challenger registered: refused")
    assert retrain_rows({"skipped": "turned off"}) == [("skipped", "turned off")]
    assert retrain_html({"skipped": "a < b"}) == "<h2>Retrain</h2><p>skipped: a &lt; b</p>"
    assert retrain_rows(None) == [] and retrain_html(None) == ""
