"""The quickstart's retrain stage without processes: its figures, its field, its skips, its rows,
its on-device step (with a stand-in node and control plane: the block's shape and its data).

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
from edgeloop.pipeline.retrain_on_device import NODE_SHIFT, node_data, node_shift, run_on_device
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


# The stage's on-device step (pipeline/retrain_on_device.py), with a stand-in node and plane.


def test_the_nodes_own_shift_differs_from_the_stages_first() -> None:
    first = Shift()  # the monitor stage's washed-out camera
    own = node_shift(first)
    assert own == NODE_SHIFT and (own.gain, own.offset) != (first.gain, first.offset)
    same = Shift(NODE_SHIFT.gain, NODE_SHIFT.offset, "the same change, another name")
    other = node_shift(same)
    assert (other.gain, other.offset) != (same.gain, same.offset)
    assert other.offset < same.offset and "darker" in other.name


def test_the_nodes_new_data_is_drawn_from_train_and_validation_only() -> None:
    splits = Splits(_set("t", 30, 0), _set("v", 10, 30), _set("test", 10, 40), seed=0)
    field = field_split(splits)
    shift = node_shift(Shift())
    xs, ys = node_data(field, shift, span=2.0, n=25, seed=0)
    unshifted = (xs - shift.offset * 2.0) / shift.gain
    rows = {r.tobytes(): i for i, r in enumerate(np.round(field.x, 4))}
    picked = [rows[r.tobytes()] for r in np.round(unshifted, 4)]
    assert len(set(picked)) == 25 and all(int(ys[k]) == field.y[i] for k, i in enumerate(picked))
    test_rows = {r.tobytes() for r in np.round(splits.test.x, 4)}
    assert not test_rows & {r.tobytes() for r in np.round(unshifted, 4)}
    # Its own seeded order: not the stage's field stream (seed + 1) of the same samples.
    streamed = field_stream(field, Shift(), 2.0, 25, 0)[0]
    assert not np.array_equal((streamed - 0.6) / 0.5, unshifted)


class _Answer:
    def __init__(self, body: dict[str, Any]) -> None:
        self.status_code, self.text, self.body = 200, "", body

    def json(self) -> dict[str, Any]:
        return self.body


class _Node:
    """The node's server: knows the test split as it is, answers class 0 to anything else."""

    def __init__(self, test: Dataset) -> None:
        rows = np.round(test.x, 4)
        self.labels = {r.tobytes(): int(y) for r, y in zip(rows, test.y, strict=True)}
        self.active = {"name": "m-edge", "version": 3, "variant": "onnx", "serving": True}

    def get(self, path: str) -> _Answer:
        return _Answer({"active": self.active} if path == "/agent/status" else {"version": "3"})

    def post(self, path: str, json: dict[str, Any]) -> _Answer:
        rows = np.asarray(json["inputs"][0]["data"], np.float32).reshape(json["inputs"][0]["shape"])
        scores = np.zeros((len(rows), 3))
        for i, row in enumerate(rows):
            scores[i, self.labels.get(np.round(row, 4).tobytes(), 0)] = 1
        return _Answer(
            {"outputs": [{"data": scores.ravel().tolist(), "shape": list(scores.shape)}]}
        )


class _Plane:
    def __init__(self, node: _Node, refuse: bool = False) -> None:
        self.node, self.refuse, self.puts, self.asked = node, refuse, [], None  # type: ignore[var-annotated]

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        if path == "/api/v1/artifacts":
            self.puts.append(kwargs["files"]["file"][0])
            return {"sha256": f"{len(self.puts):064x}"}
        if self.refuse:
            raise ConfigError("recipe 'prune-structured' cannot be redone on a node")
        self.asked = kwargs["json"]
        self.node.active = {
            **self.node.active,
            "variant": "node-local",
            "lineage": "m-edge:3+node-1.1",
        }
        return {"job_id": "j1", "node_id": "n1", "model": "m-edge:3", "state": "rejected",
                "error": None, "result": {"installed": False, "accepted": False,
                "reason": "rejected: forgets 2.0 pp > 1.0 pp", "wall_seconds": 9.5}}  # fmt: skip


def _on_device(plane: _Plane, node: _Node, test: Dataset) -> dict[str, Any]:
    field = _set("t+v", 40, 0)
    return run_on_device(plane, node, {"name": "node-1", "node_id": "n1"}, field, test,  # type: ignore[arg-type]
                         first=Shift(), span=2.0, seed=0)  # fmt: skip


def test_the_on_device_block_says_what_the_node_did_and_why_it_did_not_install() -> None:
    test = _set("test", 12, 100)
    node = _Node(test)
    plane = _Plane(node)
    block = _on_device(plane, node, test)
    assert plane.puts == ["old.npz", "replay-seed.npz", "node-data.npz"]
    assert plane.asked is not None and plane.asked["model"] == "m-edge:3"
    assert plane.asked["data"] == f"{3:064x}" and plane.asked["options"]["threads"] == 1
    assert block["model"] == "m-edge:3" and block["shift"]["offset"] == NODE_SHIFT.offset
    assert block["first_shift"]["offset"] == Shift().offset
    assert "never its test split" in block["data"]["drawn_from"]
    assert "stand in for the node's own labelled data" in block["data"]["labels_note"]
    job = block["job"]
    assert (job["state"], job["installed"], job["run_wall_s"]) == ("rejected", False, 9.5)
    assert job["why_not_installed"] == "rejected: forgets 2.0 pp > 1.0 pp"
    assert block["served_after"]["lineage"] == "m-edge:3+node-1.1"
    assert block["accuracy_before"]["correct"] == {"original": 12, "shifted": 4}  # 0: 4 of 12
    assert set(block["recovery"]["goals"]) == {"recovered_share >= 0.80", "original_loss_pp <= 1"}
    rows = dict(retrain_rows({**_block(), "on_device": block}))
    assert rows["on-device training on node-1 (m-edge:3, 40 samples)"] == (
        "not installed: rejected: forgets 2.0 pp > 1.0 pp"
    )
    assert (
        rows["node-1's own shift: before / after, recovered"] == "33.3% / 33.3%, 0.0% of 66.67 pp"
    )
    assert "the node&#x27;s own labelled data" in retrain_html({**_block(), "on_device": block})


def test_a_run_the_plane_refuses_is_recorded_with_its_reason_not_raised() -> None:
    test = _set("test", 12, 100)
    node = _Node(test)
    block = _on_device(_Plane(node, refuse=True), node, test)
    assert block["job"]["state"] == "refused"
    assert "ConfigError" in block["job"]["reason"] and "prune-structured" in block["job"]["reason"]
    assert block["accuracy_after"]["version"] == "3" and block["served_after"]["lineage"] is None
    assert (
        "not installed: ConfigError"
        in dict(retrain_rows({**_block(), "on_device": block}))[
            "on-device training on node-1 (m-edge:3, 40 samples)"
        ]
    )
