"""`fleet deploy --wait` shows progress on stderr (waves, nodes converged, why it ended) and
keeps one JSON object on stdout; rollouts name nodes as `fleet nodes` does (issue 18 item 6)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from tests.control.harness import control
from tests.tiny_models import make_linear_onnx
from typer.testing import CliRunner

from edgeloop.cli.app import app
from edgeloop.cli.fleet import progress_line
from edgeloop.core.errors import ConflictError
from edgeloop.sdk.local_fleet import LocalFleet, up


def _node(wave: int, status: str, name: str) -> dict[str, Any]:
    return {"name": name, "wave": wave, "status": status}


def test_a_progress_line_counts_the_wave_and_every_node() -> None:
    rollout = {
        "state": "WAVE",
        "wave": 1,
        "waves": [["a"], ["b", "c"], ["d"]],
        "nodes": {"a": _node(0, "healthy", "n-a"), "b": _node(1, "healthy", "n-b"),
                  "c": _node(1, "waiting", "n-c"), "d": _node(2, "not reached", "n-d")},
        "events": [{"detail": "wave 1: ['n-b', 'n-c'] given lin:1"}],
    }  # fmt: skip
    assert progress_line(rollout) == (
        "WAVE: wave 2 of 3, 1/2 node(s) converged (2 healthy, 1 waiting, 0 failed, 1 not reached)"
    )


def test_a_halted_or_finished_rollout_says_why() -> None:
    rollout = {
        "state": "HALTED",
        "wave": 0,
        "waves": [["a"]],
        "nodes": {"a": _node(0, "failed", "n-a")},
        "events": [{"detail": "guard breach in wave 0: {'n-a': 'self-test failed'}"}],
    }
    assert progress_line(rollout).endswith("- guard breach in wave 0: {'n-a': 'self-test failed'}")


def test_a_rollout_names_its_nodes_as_fleet_nodes_does(tmp_path: Path) -> None:
    with control(tmp_path / "home") as ctl:
        ctl.publish(make_linear_onnx(tmp_path / "a.onnx"), "lin")
        nodes = [ctl.enroll(f"plant-{i}", {"site": "a"}) for i in range(2)]
        spec = {"name": "d", "model": "lin:1", "plan": {"waves": ["1", "100%"], "soak_s": 0}}
        ro = ctl.ok("POST", "/api/v1/deployments", json=spec)
        listed = {n["node_id"]: n["name"] for n in ctl.ok("GET", "/api/v1/nodes")["nodes"]}
        assert {i: n["name"] for i, n in ro["nodes"].items()} == listed
        first = next(n for n in nodes if n.node_id in ro["waves"][0])
        # the events name nodes too, not by their internal ids
        assert ro["events"][-1]["detail"] == f"wave 0: [{listed[first.node_id]!r}] given lin:1"
        assert first.node_id not in json.dumps(ro["events"])


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFleet]:
    with up(tmp_path_factory.mktemp("fleet"), 2, agent_args=["--poll-s", "0.5"]) as running:
        yield running


def _cli(fleet: LocalFleet, *args: str) -> Result:
    return CliRunner().invoke(app, ["fleet", *args, "--dir", str(fleet.folder)])


@pytest.mark.slow
def test_deploy_wait_prints_progress_on_stderr_and_one_json_on_stdout(
    fleet: LocalFleet, tmp_path: Path
) -> None:
    v1 = make_linear_onnx(tmp_path / "lin.onnx", features=4, seed=1)
    published = _cli(fleet, "publish", str(v1), "--name", "lin", "--format", "json")
    assert published.exit_code == 0, published.output
    ref = json.loads(published.stdout)["ref"]
    timing = ["--waves", "1,100%", "--soak-s", "0.5", "--watch-s", "1", "--wait"]
    result = _cli(fleet, "deploy", ref, *timing, "--format", "json")
    assert result.exit_code == 0, result.output
    rollout = json.loads(result.stdout)  # stdout: one JSON object, nothing else
    assert rollout["state"] == "COMPLETED"
    lines = result.stderr.splitlines()
    assert any(line.startswith("WAVE: wave 1 of 2, 0/1 node(s) converged") for line in lines)
    assert any("wave 2 of 2, 2/2" not in line and "wave 2 of 2" in line for line in lines)
    assert lines[-1].startswith("COMPLETED: wave 2 of 2, 1/1 node(s) converged (2 healthy")
    assert lines[-1].endswith("- all 2 node(s) healthy")
    assert len(lines) == len(set(lines))  # one line per change
    names = {
        n["name"] for n in json.loads(_cli(fleet, "nodes", "--format", "json").stdout)["nodes"]
    }
    assert {n["name"] for n in rollout["nodes"].values()} == names
    table = _cli(fleet, "rollouts", rollout["rollout_id"])
    assert table.exit_code == 0 and all(name in table.stdout for name in names)

    # v2 takes 8 features where v1 took 4: refused, naming the tensor, unless forced
    v2 = make_linear_onnx(tmp_path / "lin8.onnx", features=8, seed=2)
    ref2 = json.loads(_cli(fleet, "publish", str(v2), "--name", "lin", "--format", "json").stdout)
    refused = _cli(fleet, "deploy", ref2["ref"], *timing).exception
    assert isinstance(refused, ConflictError)  # main() prints it as "error: ... hint: ..."
    assert "input 'input': float32 [None, 4] -> float32 [None, 8]" in refused.message
    assert "--force-spec-change" in (refused.hint or "")
    forced = _cli(fleet, "deploy", ref2["ref"], *timing, "--force-spec-change", "--format", "json")
    assert forced.exit_code == 0, forced.output
    assert json.loads(forced.stdout)["state"] == "COMPLETED"
