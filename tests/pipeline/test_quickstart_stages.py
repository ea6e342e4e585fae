"""The quickstart's composition without the ML: its stage list, its skips, its report files."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edgeloop.core.settings import Settings
from edgeloop.optimize.pareto import Budget, Objective
from edgeloop.optimize.tune import TuneResult
from edgeloop.pipeline.optimize import Optimized
from edgeloop.pipeline.quickstart import QuickstartConfig, QuickstartResult, quickstart_stages
from edgeloop.pipeline.report import write_report
from edgeloop.pipeline.stage import Outcome, Outcomes, Skipped, Stage, run_stages

# The report.json contract (DESIGN.md, docs/quickstart.md): the loop's stages in this order.
LOOP = [
    "load",
    "clean",
    "split",
    "train",
    "export",
    "bench",
    "register",
    "optimize",
    "convert",
    "serve",
    "fleet",
    "monitor",
    "retrain",
    "federated",
]


def _stages(tmp_path: Path, **config: Any) -> dict[str, Stage]:
    settings = Settings.load(tmp_path / "home")
    stages = quickstart_stages(tmp_path / "out", settings, QuickstartConfig(**config))
    return {s.name: s for s in stages}


def _nothing_chosen() -> Outcomes:
    """What the optimize stage hands on when no variant met the budget."""
    tuned = TuneResult(Budget(), Objective.LATENCY, None, (), (), None, ())
    return Outcomes((Outcome("optimize", Optimized(tuned, None), 1.0),))


def test_the_quickstart_is_the_loops_stages_in_order(tmp_path: Path, home: Path) -> None:
    stages = _stages(tmp_path)
    assert list(stages) == LOOP
    # Every stage comes after the stages it reads from (run_stages checks before running).
    seen: set[str] = set()
    for stage in stages.values():
        assert set(stage.needs) <= seen, stage.name
        seen.add(stage.name)


def test_fleet_with_nothing_chosen_is_skipped_and_says_why(tmp_path: Path, home: Path) -> None:
    result = _stages(tmp_path)["fleet"].run(_nothing_chosen())
    assert result == Skipped("no variant met the accuracy budget, so there is nothing to roll out")


@pytest.mark.parametrize(
    ("stage", "config", "reason"),
    [
        ("fleet", {"fleet": False}, "turned off (--no-fleet)"),
        ("convert", {"convert": False}, "turned off (QuickstartConfig.convert is False)"),
    ],
)
def test_a_stage_turned_off_is_skipped_with_that_reason(
    tmp_path: Path, home: Path, stage: str, config: dict[str, Any], reason: str
) -> None:
    assert _stages(tmp_path, **config)[stage].run(_nothing_chosen()) == Skipped(reason)


@dataclass(frozen=True)
class Block:
    """A stand-in stage result carrying a ready report block."""

    body: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return self.body


MODEL_BLOCK: dict[str, Any] = {
    "dataset": {"name": "digits", "source": "bundled", "hash": "ab" * 32, "split": {"train": 7}},
    "clean": {"missing_values": 0, "clipped_values": 0, "duplicates_dropped": 0},
    "train": {
        "best_epoch": 2,
        "epochs_run": 3,
        "test_accuracy": 0.99,
        "test_macro_f1": 0.98,
        "test_roc_auc": None,
    },
    "export": {"max_abs_diff": 1e-7, "top1_agreement": 1.0},
    "registry": {"ref": "m:1", "edge_ref": None},
    "history": [
        {"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.2 / e, "val_metric": 0.5 + e / 10}
        for e in (1, 2, 3)
    ],
    "bench": [
        {
            "batch_size": 1,
            "cpu": "test cpu",
            "latency_ms": {"p50": 1, "p90": 2, "p99": 3},
            "throughput_per_s": 1000.0,
            "size_bytes": 1234,
            "peak_rss_mb": None,
            "power_w": None,
            "power_source": "no meter: none found",
        }
    ],
    "variants": [{"recipe": "fp32", "accuracy": 0.9, "latency_ms": 1.0, "size_bytes": 1234}],
    "pareto": [],
    "chosen": None,
    "tune": {"budget_note": "none", "objective": "latency"},
}
SKIPS = {
    "convert": "turned off (QuickstartConfig.convert is False)",
    "serve": "the serve extra is not installed (fastapi missing)",
    "fleet": "no variant met the accuracy budget, so there is nothing to roll out",
}


def _all_but_model_skipped() -> QuickstartResult:
    stages = [
        Stage("model", lambda done: Block(MODEL_BLOCK)),
        *(Stage(name, lambda done, why=why: Skipped(why)) for name, why in SKIPS.items()),
    ]
    return QuickstartResult(run_stages(stages), {"python": "3"})


def test_the_report_files_name_every_skipped_stage_and_why(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "pareto.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 64)  # the optimize stage's
    paths = write_report(_all_but_model_skipped(), out)

    body = json.loads(paths["json"].read_text())
    assert body["stages"] == ["model"]
    assert body["skipped"] == SKIPS
    for name, why in SKIPS.items():
        assert body[name] == {"skipped": why}
    assert set(body["stage_seconds"]) == {"model"}
    assert body["machine"] == {"python": "3"}
    page = paths["html"].read_text()
    assert "<h2>Stages skipped</h2>" in page
    assert "<h2>Edge targets (convert)</h2><p>skipped: turned off" in page
    for why in SKIPS.values():
        assert why in page
    assert paths["training_curve"].read_bytes()[:4] == b"\x89PNG"


def test_the_cli_table_shows_each_skipped_stage_with_its_reason() -> None:
    from rich.console import Console

    from edgeloop.cli.quickstart import _figures_table

    console = Console(width=400, record=True)
    console.print(_figures_table(_all_but_model_skipped().to_dict(), 12.0))
    text = console.export_text()

    for name, why in SKIPS.items():
        assert any(name in line and "skipped" in line and why in line for line in text.splitlines())
