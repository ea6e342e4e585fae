"""The retraining-job routes of a real control plane (its app in-process, its registry on disk),
the job itself a real OS process; a control-plane restart while a job's process is gone."""

from __future__ import annotations

import os
import signal
import time
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
from tests.control.harness import Control, control
from tests.pipeline.retrain_setup import Champion, store_samples

pytest.importorskip("torch")
pytest.importorskip("sklearn")


def _until_running(ctl: Control, job_id: str) -> dict[str, object]:
    end = time.monotonic() + 120
    while time.monotonic() < end:
        job = ctl.ok("GET", f"/api/v1/jobs/{job_id}")
        if job["state"] != "queued":
            return dict(job)
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never started")


@pytest.fixture
def champ(retrain_champion: Champion) -> Champion:
    return retrain_champion  # one per test session (tests/conftest.py)


def _refs(champ: Champion) -> list[str]:
    from edgeloop.registry.registry import Registry

    with Registry.open(champ.settings) as registry:
        return [str(v.ref) for v in registry.list()]


def test_retrain_over_http_409_while_one_runs_and_recovery_after_a_restart(
    champ: Champion,
) -> None:
    home = champ.settings.home
    before = _refs(champ)
    body = {"model": str(champ.ref), "data": [str(champ.shifted)],
            "checkpoint": str(champ.checkpoint), "epochs": 500}  # fmt: skip
    with control(home) as ctl:
        started = ctl.request("POST", "/api/v1/jobs/retrain", json=body, headers=ctl.admin)
        assert started.status_code == 202, started.text
        job_id = started.json()["id"]

        second = ctl.request("POST", "/api/v1/jobs/retrain", json=body, headers=ctl.admin)
        assert second.status_code == 409
        assert second.json()["job_id"] == job_id and job_id in second.json()["error"]

        running = _until_running(ctl, job_id)
        assert running["state"] == "running"
        listed = ctl.ok("GET", "/api/v1/jobs?active=true")["jobs"]
        assert [j["id"] for j in listed] == [job_id]
        # The control plane goes down; the job's process dies while it is down.
        pid = int(running["runner"]["pid"])  # type: ignore[index]
        os.killpg(pid, signal.SIGKILL)
        _gone(pid)  # reaped by the executor's waiter thread

    with control(home) as ctl:  # the restart: the job routes recover dead jobs
        job = ctl.ok("GET", f"/api/v1/jobs/{job_id}")
        assert job["state"] == "failed"
        assert "ended without finishing" in job["reason"]
        assert "nothing was registered" in job["reason"]
        assert job["log"][-1]["line"] == job["reason"]
        assert _refs(champ) == before


def test_bad_requests_are_4xx_naming_the_problem(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with control(home) as ctl:
        unknown = ctl.request("POST", "/api/v1/jobs/retrain", headers=ctl.admin,
                              json={"model": "nope", "data": ["caps:1"]})  # fmt: skip
        assert unknown.status_code == 404 and "nope" in unknown.json()["error"]
        extra = ctl.request("POST", "/api/v1/jobs/retrain", headers=ctl.admin,
                            json={"model": "m", "data": ["c:1"], "colour": 1})  # fmt: skip
        assert extra.status_code == 400 and "colour" in extra.json()["error"]
        missing = ctl.request("GET", "/api/v1/jobs/nope", headers=ctl.admin)
        assert missing.status_code == 404
        assert ctl.request("GET", "/api/v1/jobs").status_code == 401  # admin only
        assert ctl.request("POST", "/api/v1/jobs/nope/cancel", headers=ctl.admin).status_code == 404


def test_a_single_class_data_set_is_422_before_any_job_exists(champ: Champion) -> None:
    home = champ.settings.home
    rows = np.flatnonzero(champ.clean.y == 7)[:10]
    sevens = store_samples(champ.settings, "sevens", champ.clean.subset(rows),
                           champ.clean.x[rows])  # fmt: skip
    with control(home) as ctl:
        refused = ctl.request("POST", "/api/v1/jobs/retrain", headers=ctl.admin,
                              json={"model": str(champ.ref), "data": [str(sevens)],
                                    "checkpoint": str(champ.checkpoint)})  # fmt: skip
        assert refused.status_code == 422
        assert "one class only ('7'" in refused.json()["error"]
        assert ctl.ok("GET", "/api/v1/jobs?active=true")["jobs"] == []


def _gone(pid: int) -> None:
    end = time.monotonic() + 30
    while time.monotonic() < end:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} was not reaped")


def test_a_drift_alert_opening_starts_the_policys_job_once(champ: Champion) -> None:
    from edgeloop.control.alerts import Alert, AlertState, RuleKind
    from edgeloop.control.jobs_api import PolicyTrigger
    from edgeloop.pipeline.retrain_executor import LocalProcessExecutor
    from edgeloop.pipeline.retrain_job import cancel
    from edgeloop.pipeline.retrain_policy import RetrainPolicy
    from edgeloop.registry.job_store import JobStore

    drift = Alert("a1", "drift", RuleKind.DRIFTING_NODES, str(champ.ref), AlertState.FIRING,
                  0.0, 0.0, None)  # fmt: skip
    options = {"checkpoint": str(champ.checkpoint), "epochs": 500}
    policy = RetrainPolicy(champ.ref.name, ("shifted",), options=options)
    executor = LocalProcessExecutor()
    trigger = PolicyTrigger((policy,), champ.settings, executor)
    trigger((drift,))
    trigger((drift,))  # the job runs already: 409, taken as "being handled"
    assert len(trigger.started) == 1
    with closing(JobStore(champ.settings.db_url)) as store:
        job = store.get(trigger.started[0])
        assert job.spec["trigger"] == "drift-alert" and job.spec["data"] == ["shifted:1"]
        cancel(job.id, store, executor)
        executor.wait(job.runner, 60)
        assert store.get(job.id).state.value == "cancelled"
