"""The quickstart end to end, as `make demo` runs it: real data, real training, real files."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from tests.pipeline.test_quickstart_stages import LOOP
from typer.testing import CliRunner

from edgeloop.cli.app import app
from edgeloop.core.settings import Settings
from edgeloop.core.types import ModelRef
from edgeloop.pipeline import retrain_on_device, retrain_stage
from edgeloop.registry import Registry

pytest.importorskip("torch")
pytest.importorskip("sklearn")


@pytest.mark.slow
# The whole loop, conversion and a fleet of four processes included: minutes on a shared 2-core box.
@pytest.mark.timeout(1500)
def test_quickstart_runs_the_loop_and_every_figure_is_measured(tmp_path: Path, home: Path) -> None:
    out = tmp_path / "out"
    # The federated stage runs across an FL fleet in tests/federated/test_fl_fleet.py: off here
    # (here its fleet would start three more torch processes, one per agent, for it). The
    # retrain stage runs here: this is the loop's end-to-end test (shift -> capture -> label ->
    # retrain -> rollout -> recovery) on the fleet and monitor stages this test already pays for.
    args = ["quickstart", "--out", str(out), "--format", "json", "--no-federated"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)

    assert body["stages"] == [s for s in LOOP if s != "federated"]  # in order
    # Every stage ran (nothing skipped here: the extras are installed), each one timed.
    assert body["skipped"] == {"federated": "turned off (--no-federated)"}
    assert list(body["stage_seconds"]) == body["stages"]
    assert body["stage_seconds"]["train"] > 0 and min(body["stage_seconds"].values()) >= 0
    assert body["checkpoint"] == str(out / "checkpoint")
    assert body["dataset"]["name"] == "digits" and body["dataset"]["samples"] == 1797
    # The bars: >= 97 % test accuracy, parity <= 1e-4 with 100 % top-1 agreement.
    assert body["train"]["test_accuracy"] >= 0.97
    assert body["export"]["max_abs_diff"] <= 1e-4
    assert body["export"]["top1_agreement"] == 1.0
    b1, b32 = body["bench"]
    assert (b1["batch_size"], b32["batch_size"]) == (1, 32)
    assert 0 < b1["latency_ms"]["p50"] <= b1["latency_ms"]["p99"]
    assert b1["accuracy"] == pytest.approx(body["train"]["test_accuracy"], abs=1e-9)
    assert b1["size_bytes"] == (out / "digits-cnn.onnx").stat().st_size
    assert b1["power_w"] is None or b1["power_w"] > 0
    assert isinstance(b1["power_source"], str) and b1["power_source"]

    report = json.loads((out / "report.json").read_text())
    variants = {row["recipe"]: row for row in report["variants"]}
    assert next(iter(variants)) == "fp32"
    assert variants["fp32"]["size_bytes"] == b1["size_bytes"]
    int8 = variants["static-int8"]
    assert int8["error"] is None
    assert b1["size_bytes"] / int8["size_bytes"] >= 3.0  # INT8 weights: ~4x smaller
    # The choice meets the derived budget: within 1 pp of the parent's measured accuracy.
    chosen = report["chosen"]
    assert chosen is not None
    assert chosen["accuracy"] >= variants["fp32"]["accuracy"] - 0.01
    assert chosen["recipe"] in {row["recipe"] for row in report["pareto"]}
    # The serving stage: a real server process, answers over HTTP, no torch in it.
    serve = report["serve"]
    assert serve["torch_imported"] is False
    assert set(serve["models"]) == {"digits-cnn", "digits-cnn-edge"}
    for load in serve["models"].values():
        assert load["requests"] > 0 and load["errors"] == 0
        assert load["served_accuracy"] >= 0.97
    assert serve["metrics_requests_total"] >= sum(m["requests"] for m in serve["models"].values())
    # The fleet stage: three agent processes, a staged rollout, a broken v2 caught; they run on
    # for the monitor stage below.
    fleet = report["fleet"]
    assert fleet["rollout"]["state"] == "COMPLETED"
    assert [len(w) for w in fleet["rollout"]["waves"]] == [1, 2]
    for node in fleet["nodes"]:
        assert node["served_v1"]["requests"] == body["dataset"]["split"]["test"]
        assert node["served_v1"]["accuracy"] >= 0.97
        assert node["on_v1"] is True
    assert fleet["broken_v2"]["state"] == "ROLLED_BACK"
    assert len(fleet["broken_v2"]["reached"]) == 1
    assert len(fleet["broken_v2"]["never_received"]) == 2
    # The monitor stage: one node of that fleet, a shift injected, the labels posted back.
    mon, test_n = report["monitor"], body["dataset"]["split"]["test"]
    assert (mon["stream"]["samples"], mon["stream"]["shift_at"]) == (2 * test_n, test_n)
    assert mon["labels"]["applied"] == mon["labels"]["posted"] == 2 * test_n  # joined on the node
    assert mon["stream"]["monitor_samples_after"] - mon["stream"]["monitor_samples_before"] == (
        2 * test_n
    )
    alarm = mon["alarm"]
    assert alarm["delay_samples"] is not None and 0 <= alarm["delay_samples"] < test_n
    assert alarm["kind"] in {"input", "prediction", "confidence"}
    assert alarm["score"] > alarm["threshold"]
    assert str(uuid.UUID(alarm["telemetry_id"])) == alarm["telemetry_id"]  # the stored item's
    before, after = mon["accuracy"]["before_shift"], mon["accuracy"]["after_shift"]
    assert before["true"] >= 0.95 and after["true"] < before["true"] - 0.2
    assert before["estimated"] is not None and after["estimated"] is not None
    node_id = mon["node"]["node_id"]
    rows = {r["node_id"]: r for r in mon["fleet_monitor"]["rows"]}
    assert len(rows) == 3 and rows[node_id]["drifting"] is True
    assert rows[node_id]["samples_seen"] >= mon["stream"]["monitor_samples_after"]
    assert (
        "drifting" in mon["fleet_monitor"]["table"] and node_id[:8] in mon["fleet_monitor"]["table"]
    )
    assert (out / "monitor_drift.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    _the_retrain_stage_recovers_the_shifted_stream(report)
    assert '<a href="monitor_drift.png">' in (out / "report.html").read_text()
    for name in ("report.html", "training_curve.png", "latency.png", "pareto.png"):
        data = (out / name).read_bytes()
        assert len(data) > 1000
    assert (out / "training_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "digits" in (out / "report.html").read_text()

    with Registry.open(Settings.load(home)) as registry:
        version, artifact = registry.resolve(ModelRef.parse(body["registry"]["ref"]))
    assert version.manifest.parity is not None
    assert version.manifest.parity.max_abs_diff == body["export"]["max_abs_diff"]
    assert version.manifest.source_data_hash == body["dataset"]["hash"]
    assert artifact.read_bytes() == (out / "digits-cnn.onnx").read_bytes()
    with Registry.open(Settings.load(home)) as registry:
        edge, _ = registry.resolve(ModelRef.parse(body["registry"]["edge_ref"]))
        lineage = [str(v.ref) for v in registry.lineage(edge.ref)]
    assert edge.manifest.parent == version.ref
    assert lineage[-1] == str(version.ref)
    assert edge.manifest.recipe["recipe"] == chosen["recipe"]


def _the_retrain_stage_recovers_the_shifted_stream(report: dict[str, Any]) -> None:
    """Shift -> capture -> label -> retrain -> rollout -> recovery, across the fleet's processes:
    the node captured the shifted field after its drift alarm, the labels posted by request id
    joined the captures in a data set version on the control plane, a job process retrained the
    fp32 parent from its checkpoint (and rebuilt the edge recipe where it kept its floor), the
    control plane rolled the result out in waves and the node answers the shifted test split."""
    rt = report["retrain"]
    field, n = rt["field"], retrain_stage.FIELD_SAMPLES
    assert field["samples"] == field["streamed"] == n
    assert field["labels"]["applied"] == n
    assert field["captured"] == field["labels_arrived"] == n
    data = rt["dataset"]
    assert data["samples"] == data["labelled"] == n
    assert data["provenance"]["node_ids"] == [rt["node"]["node_id"]]
    assert data["provenance"]["reasons"] == ["drift"]
    assert "stand in for the labels a person would give" in rt["labels_note"]
    job = rt["job"]
    assert job["state"] == "succeeded", job["reason"]
    assert rt["champion"] == {"served": report["fleet"]["rollout"]["ref"],
                              "parent": report["fleet"]["rollout"]["parent"]}  # fmt: skip
    scores = job["evaluation"]
    recent = {who: scores[who]["recent"]["accuracy"] for who in ("champion", "challenger")}
    assert recent["challenger"] > recent["champion"]  # the challenger learned the shifted field
    _one_node_trains_for_its_own_shift(rt)
    if not job["decision"]["promote"]:
        # The guard held: on the original test split (269 images) the challenger lost more than
        # 1 pp, 3 images, which happened in 1 of 3 runs (the champion's own training differs
        # from run to run by a few images). Nothing was rolled out; the report says why.
        assert job["reason"].startswith("refused: loses more than 1.00 pp"), job["reason"]
        assert job["edge"] is None and job["challenger"] is None
        assert rt["rollout"]["skipped"].startswith("no challenger registered: refused")
        return
    new = job["edge"] or job["challenger"]  # the challenger alone when the edge recipe missed
    rollout = rt["rollout"]
    assert rollout["ref"] == new and rollout["state"] == "COMPLETED"
    assert [len(w) for w in rollout["waves"]] == [1, 2]
    assert {str(v) for v in rt["nodes_after"].values()} == {new.split(":")[1]}
    # The shifted test split (never trained on, in any form) comes back through the node.
    before, after = rt["accuracy_before"], rt["accuracy_after"]
    assert before["version"] == rt["champion"]["served"].split(":")[1]
    assert after["version"] == new.split(":")[1]
    assert before["shifted"] < before["original"] - 0.2
    assert after["shifted"] > before["shifted"] + 0.2
    assert rt["recovery"]["shift_cost_pp"] > 20 and rt["recovery"]["recovered_share"] > 0.3


def _one_node_trains_for_its_own_shift(rt: dict[str, Any]) -> None:
    """The stage's last step: node-1 sees a second shift of its own and trains for it itself
    (its agent's worker process), on shifted train/val samples uploaded as the job's data; an
    accepted run is served by node-1 as a node-local version, a rejected one says why."""
    od, first = rt["on_device"], rt["field"]["shift"]
    assert od["node"] == {"name": rt["node"]["name"], "node_id": rt["node"]["node_id"]}
    assert (od["shift"]["gain"], od["shift"]["offset"]) != (first["gain"], first["offset"])
    assert od["data"]["samples"] == retrain_on_device.NODE_SAMPLES
    assert "never its test split" in od["data"]["drawn_from"]
    rolled = rt["rollout"].get("ref")  # node-1 trains what it serves: the challenger, if rolled
    assert od["model"] == (rolled or rt["champion"]["served"])
    before, after, job = od["accuracy_before"], od["accuracy_after"], od["job"]
    assert before["shifted"] < before["original"] - 0.1  # the node's shift costs what it serves
    assert "on_device" in rt["seconds_parts"]
    if not job["installed"]:  # refused or rejected: recorded with its reason, nothing served
        assert job["state"] in {"refused", "rejected"} and job["why_not_installed"], job
        assert od["served_after"]["lineage"] is None
        return
    assert job["state"] == "done" and job["accepted"] is True
    assert re.fullmatch(rf"{re.escape(od['model'])}\+node-1\.[0-9]+", job["lineage"]), job
    served = od["served_after"]
    assert served["lineage"] == job["lineage"] and served["serving"] is True
    assert after["shifted"] > before["shifted"]  # node-1's server answers its own shift better
    assert job["run_wall_s"] > 0 and job["peak_rss_mb"] > 0
    assert job["old_accuracy_after"] is not None and job["new_accuracy_after"] is not None
