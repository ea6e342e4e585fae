"""``edgeloop control --retrain-policies`` with a schedule, as a real OS process: a due slot
starts a retraining job with the trigger ``schedule`` (its own process), the next slot finds it
running (409, recorded as that slot's outcome), and a bad interval is refused before anything
is opened."""

from __future__ import annotations

import json
import time
from contextlib import closing
from pathlib import Path

import httpx
import pytest
from tests.control.process import control_process
from tests.pipeline.retrain_setup import Champion
from typer.testing import CliRunner

from edgeloop.cli.app import app
from edgeloop.control.schedule_tick import SlotState, get
from edgeloop.core.errors import ConfigError
from edgeloop.registry.database import connect

pytest.importorskip("torch")
pytest.importorskip("sklearn")
ADMIN = "schedule-test-admin-token"


def _slot(db_url: str, model: str) -> SlotState | None:
    db = connect(db_url)
    try:
        with db.engine.connect() as conn:
            return get(conn, model)
    except Exception:  # the table is created by the control plane's first tick
        return None
    finally:
        db.engine.dispose()


def _latest(champ: Champion, model: str) -> str:
    """The model's latest version (other retraining tests of the session may add versions)."""
    from edgeloop.core.types import ModelRef
    from edgeloop.registry.registry import Registry

    with Registry.open(champ.settings) as registry:
        return str(registry.show(ModelRef(model)).ref)


def test_a_due_slot_starts_a_job_with_trigger_schedule_and_the_next_finds_it_running(
    retrain_champion: Champion, tmp_path: Path
) -> None:
    from edgeloop.pipeline.retrain_executor import LocalProcessExecutor
    from edgeloop.pipeline.retrain_job import cancel
    from edgeloop.registry.job_store import JobStore

    champ = retrain_champion
    model = champ.ref.name
    policies = tmp_path / "policies.json"
    policy = {"model": model, "data": [champ.shifted.name], "kinds": [],
              "schedule": {"every": "2s"},
              "options": {"checkpoint": str(champ.checkpoint), "epochs": 500}}  # fmt: skip
    policies.write_text(json.dumps({"policies": [policy]}))
    auth = {"Authorization": f"Bearer {ADMIN}"}
    home = champ.settings.home
    job_id = None
    try:
        with control_process(home, None, "--retrain-policies", str(policies),
                             admin_token=ADMIN) as ctl:  # fmt: skip
            end = time.monotonic() + 60
            while time.monotonic() < end:
                row = _slot(champ.settings.db_url, model)
                if row is not None and job_id is None and row.job_id is not None:
                    job_id = row.job_id
                if job_id is not None and row is not None and "409" in row.outcome:
                    break
                time.sleep(0.1)
            assert job_id is not None, ctl.log.read_text()[-2000:]
            assert row is not None and f"job {job_id} runs already (409)" == row.outcome
            jobs = httpx.get(f"{ctl.url}/api/v1/jobs?model={model}", headers=auth, timeout=30)
            job = next(j for j in jobs.json()["jobs"] if j["id"] == job_id)
            assert job["spec"]["trigger"] == "schedule"
            assert job["spec"]["model"] == _latest(champ, model)  # pinned when submitted
    finally:  # the control plane is down: no slot starts another job while these end
        with closing(JobStore(champ.settings.db_url)) as store:
            executor = LocalProcessExecutor()
            for active in store.list(model, active=True):
                cancel(active.id, store, executor)
            end = time.monotonic() + 60
            while store.list(model, active=True) and time.monotonic() < end:
                time.sleep(0.1)
            assert store.list(model, active=True) == []


def test_a_bad_interval_is_refused_before_the_control_plane_opens(tmp_path: Path) -> None:
    policies = tmp_path / "policies.json"
    bad = {"model": "m", "data": ["caps"], "schedule": {"every": "1.5h"}}
    policies.write_text(json.dumps({"policies": [bad]}))
    home = tmp_path / "home"
    args = ["control", "--home", str(home), "--retrain-policies", str(policies)]
    exc = CliRunner().invoke(app, args).exception  # main() prints it as "error: ... hint: ..."
    assert isinstance(exc, ConfigError) and exc.exit_code == 2
    assert "'1.5h'" in exc.message and "'24h'" in exc.message and str(policies) in exc.message
    assert not (home / "control").exists()
