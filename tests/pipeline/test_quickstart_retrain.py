"""Shift -> capture -> label -> retrain -> rollout -> recovery, across real processes.

The quickstart's own stages on digits, made small (8 training epochs, one optimization recipe,
one torch thread; the retrain stage as it is: 300 field samples, 8 retraining epochs), without
the stages the loop does not need here (convert, serve, federated): a control plane and three
agent processes, the monitor stage's shifted stream on one node, then the retrain stage: the
node captures the shifted field after its drift alarm, the labels posted by request id join the
captures in a data set version on the control plane, a job process retrains the fp32 parent
from its checkpoint and rebuilds the int8 edge variant, the control plane rolls it out in
waves, and the node answers the shifted test split again.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path

import pytest

from edgeloop.core.settings import Settings
from edgeloop.pipeline import retrain_stage
from edgeloop.pipeline.quickstart import QuickstartConfig, quickstart_stages
from edgeloop.pipeline.stage import run_stages

pytest.importorskip("torch")
pytest.importorskip("sklearn")

NEEDED = ("load", "clean", "split", "train", "export", "bench", "register", "optimize", "fleet",
          "monitor", "retrain")  # fmt: skip


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_shift_is_captured_labelled_retrained_rolled_out_and_recovered(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    import torch

    # One torch thread here and in every process the test starts (the job's included), to keep
    # the test's CPU small on a shared 2-core machine.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    request.addfinalizer(lambda: torch.set_num_threads(threads))
    config = QuickstartConfig(epochs=8, recipes=("static-int8",), bench_runs=20, convert=False)
    with ExitStack() as hold:
        stages = quickstart_stages(tmp_path / "out", Settings.load(home), config, hold=hold)
        done = run_stages([s for s in stages if s.name in NEEDED])
    assert done.skipped() == {}
    body = done.report()
    (tmp_path / "report.json").write_text(json.dumps(body, default=str))  # to read on failure
    mon, rt = body["monitor"], body["retrain"]
    assert mon["alarm"]["delay_samples"] is not None  # the shift was detected ...
    # ... so the node kept the shifted field it answered after it, and every label followed.
    field = rt["field"]
    n = retrain_stage.FIELD_SAMPLES
    assert field["samples"] == field["streamed"] == n
    assert field["labels"]["applied"] == n
    assert field["captured"] == field["labels_arrived"] == n
    data = rt["dataset"]
    assert data["samples"] == data["labelled"] == n
    assert data["provenance"]["node_ids"] == [rt["node"]["node_id"]]
    assert data["provenance"]["reasons"] == ["drift"]
    assert "stand in for the labels a person would give" in rt["labels_note"]
    # The job retrained the fp32 parent the fleet stage published, and rebuilt its int8 child.
    job = rt["job"]
    assert job["state"] == "succeeded" and job["decision"]["promote"] is True, job["reason"]
    assert rt["champion"] == {"served": body["fleet"]["rollout"]["ref"],
                              "parent": body["fleet"]["rollout"]["parent"]}  # fmt: skip
    name = rt["champion"]["served"].split(":")[0]
    assert job["edge"].startswith(f"{name}:") and job["optimize"]["rebuilt"] == "static-int8"
    evaluation = job["evaluation"]
    recent = {who: evaluation[who]["recent"]["accuracy"] for who in ("champion", "challenger")}
    assert recent["challenger"] > recent["champion"]
    # Rolled out in the fleet's guarded waves: one node, then the rest; all three serve it.
    rollout = rt["rollout"]
    assert rollout["ref"] == job["edge"] and rollout["state"] == "COMPLETED"
    assert [len(w) for w in rollout["waves"]] == [1, 2]
    assert {str(v) for v in rt["nodes_after"].values()} == {job["edge"].split(":")[1]}
    # The shifted test split (never trained on) comes back through the node.
    before, after = rt["accuracy_before"], rt["accuracy_after"]
    assert before["version"] == rt["champion"]["served"].split(":")[1]
    assert after["version"] == job["edge"].split(":")[1]
    assert before["shifted"] < before["original"] - 0.2
    assert after["shifted"] > before["shifted"] + 0.2
    assert rt["recovery"]["shift_cost_pp"] > 20 and rt["recovery"]["recovered_share"] > 0.3
