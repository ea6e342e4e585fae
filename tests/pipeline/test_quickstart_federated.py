"""The quickstart's federated stage without processes: its rows, its skips, its drawings, its flag.

The stage itself runs across real agents in tests/federated/test_fl_fleet.py (on that module's
fleet of three agents with digits shares); the quickstart end to end turns it off.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from edgeloop.core.settings import Settings
from edgeloop.pipeline.federated_stage import (
    cannot_train,
    federated_stage,
    fleet_share,
    round_rows,
)
from edgeloop.pipeline.federated_stage_report import federated_html, federated_rows, plot_federated
from edgeloop.pipeline.fleet import FleetStageResult
from edgeloop.pipeline.quickstart import QuickstartConfig, quickstart_stages
from edgeloop.pipeline.stage import Outcome, Outcomes, Skipped
from edgeloop.sdk.fl_data import FlData

NAMES = {"id-a": "node-1", "id-b": "node-2"}


def _round(n: int, started: float, closed: float | None, **over: Any) -> dict[str, Any]:
    return {"round": n, "started_at": started, "closed_at": closed,
            "participants": ["id-b", "id-a"], "dropouts": [], "rejected": {}, "accuracy": None,
            "eval_samples": 0, "num_samples": 958, "client_loss": 2.0, "bytes_up": 80,
            "bytes_down": 80,
            **over}  # fmt: skip


def test_each_closed_round_becomes_a_row_with_names_and_its_own_time() -> None:
    doc = {"history": [
        _round(1, 100.0, 100.5, accuracy=0.4, eval_samples=360),
        _round(2, 100.5, 101.25, dropouts=["id-a"], participants=["id-b"], rejected={"x": "nan"}),
        _round(3, 101.25, None),  # still open: not a row
    ]}  # fmt: skip
    rows = round_rows(doc, NAMES)
    assert [r["round"] for r in rows] == [1, 2]
    assert rows[0]["participants"] == ["node-1", "node-2"] and rows[0]["seconds"] == 0.5
    assert rows[0]["accuracy"] == 0.4 and rows[0]["eval_samples"] == 360
    assert rows[1]["dropouts"] == ["node-1"] and rows[1]["rejected"] == 1
    assert rows[1]["accuracy"] is None and rows[1]["seconds"] == 0.75
    assert rows[1]["bytes_up"] == 80 and rows[1]["train_samples"] == 958


def test_the_shares_are_given_only_when_the_stage_can_run() -> None:
    share = fleet_share("digits", True)
    assert isinstance(share, FlData) and share.dataset == "digits"
    assert str(share.partition) == "iid" and share.seed == 42
    assert fleet_share("digits", False) is None  # turned off: no agent starts a torch worker
    assert fleet_share("basic-motions", True) is None
    assert cannot_train("digits") is None
    assert "the quickstart runs on 'basic-motions'" in str(cannot_train("basic-motions"))


def test_without_a_running_fleet_the_stage_is_skipped_and_says_why(
    tmp_path: Path,
) -> None:
    assert federated_stage(None, "digits", tmp_path) == Skipped(
        "the fleet stage stopped its fleet (no running fleet was handed on)"
    )


def test_the_stage_comes_after_the_fleet_and_can_be_turned_off(tmp_path: Path, home: Path) -> None:
    settings = Settings.load(tmp_path / "home")
    stages = {s.name: s for s in quickstart_stages(tmp_path, settings, QuickstartConfig())}
    assert stages["federated"].needs == ("fleet",)
    assert list(stages).index("federated") > list(stages).index("monitor")
    off = quickstart_stages(tmp_path, settings, QuickstartConfig(federated=False))
    done = Outcomes((Outcome("fleet", FleetStageResult((), {"ref": "m:1"}, {}), 1.0),))
    assert {s.name: s for s in off}["federated"].run(done) == Skipped("turned off (--no-federated)")
    from edgeloop.cli.app import app

    shown = CliRunner().invoke(app, ["quickstart", "--help"], env={"COLUMNS": "200"})
    assert "--no-federated" in shown.output


def _block(plot: Path) -> dict[str, Any]:
    rows = round_rows({"history": [_round(1, 0.0, 0.4, accuracy=0.31, eval_samples=360),
                                   _round(2, 0.4, 0.9, accuracy=0.66, eval_samples=360)]},
                      NAMES)  # fmt: skip
    return {"task_id": "t1", "model": "digits-cnn", "strategy": "fedavg", "state": "done",
            "data": {"shares": {"node-1": {}, "node-2": {}}}, "initial_accuracy": 0.1,
            "rounds_table": rows, "registration": {"ref": "fl-digits-cnn:1", "reason": None,
            "state": "registered"}, "plot": str(plot), "seconds": 9.5,
            "command": "edgeloop fl status t1 --dir F", "seconds_parts": {"task": 4.2}}  # fmt: skip


def test_the_curve_the_page_and_the_cli_rows_show_what_the_task_measured(tmp_path: Path) -> None:
    plot = tmp_path / "federated_accuracy.png"
    block = _block(plot)
    plot_federated(block["rounds_table"], 0.1, plot, title="digits-cnn")
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = federated_html(block)
    assert "data:image/png;base64," in page and "fl-digits-cnn:1" in page
    assert "<td>31.00% of 360</td><td>node-1, node-2</td><td>0.40</td>" in page
    rows = dict(federated_rows(block))
    assert rows["round 2: accuracy / participants / s / bytes up+down"] == (
        "66.00% of 360 / node-1, node-2 / 0.50 / 80 / 80"
    )
    assert rows["registered (fleet's control plane)"] == "fl-digits-cnn:1"
    assert (
        federated_html({"skipped": "turned off"}) == "<h2>Federated</h2><p>skipped: turned off</p>"
    )
    assert federated_rows({"skipped": "turned off"}) == [("skipped", "turned off")]
    failed = {**block, "state": "failed", "registration": {"ref": None, "reason": None}}
    assert ("registered (fleet's control plane)", "nothing (the task ended failed)") in (
        federated_rows(failed)
    )
    assert federated_html(None) == "" and federated_rows(None) == []
