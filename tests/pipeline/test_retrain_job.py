"""The retraining job across real processes: a real champion, a real SQLite registry, the job
run by ``LocalProcessExecutor`` as its own OS process (or in this process where only the
pipeline's logic is under test)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from tests.pipeline.retrain_setup import Champion, store_samples, unlabelled

from edgeloop.core.errors import ConfigError, DataError, NotFoundError
from edgeloop.core.types import ModelRef
from edgeloop.pipeline.retrain_executor import LocalProcessExecutor
from edgeloop.pipeline.retrain_job import cancel as cancel_job
from edgeloop.pipeline.retrain_job import prepare, recover, run_job, submit
from edgeloop.pipeline.retrain_spec import KIND, Init, RetrainSpec
from edgeloop.registry.datasets import DatasetRef
from edgeloop.registry.job_store import JobStore
from edgeloop.registry.jobs import Job, JobRunningError, JobState
from edgeloop.registry.registry import Registry

pytest.importorskip("torch")
pytest.importorskip("sklearn")


@pytest.fixture
def champion(retrain_champion: Champion) -> Champion:
    return retrain_champion  # one per test session (tests/conftest.py)


@pytest.fixture
def jobs(champion: Champion) -> Iterator[JobStore]:
    store = JobStore(champion.settings.db_url)
    yield store
    for job in store.list(active=True):  # leave no job holding the model for the next test
        store.finish(job.id, JobState.FAILED, "test cleanup")
    store.close()


def _spec(c: Champion, **fields: object) -> RetrainSpec:
    base: dict[str, object] = {
        "model": c.ref,
        "data": (c.shifted,),
        "checkpoint": str(c.checkpoint),
        "epochs": 2,
    }
    return RetrainSpec(**{**base, **fields})  # type: ignore[arg-type]


def _versions(c: Champion) -> list[str]:
    with Registry.open(c.settings) as registry:
        return [str(v.ref) for v in registry.list()]


def _until(store: JobStore, job_id: str, done: object, timeout: float = 120.0) -> Job:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        job = store.get(job_id)
        if done(job):  # type: ignore[operator]
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached the wanted state: {store.get(job_id)}")


def test_a_promoted_challenger_is_registered_with_its_lineage(
    champion: Champion, jobs: JobStore
) -> None:
    executor = LocalProcessExecutor()
    spec = _spec(champion, max_original_drop=1.0)  # this test is about registering, not the bar
    job = submit(spec, champion.settings, jobs, executor)
    assert executor.wait(job.runner, 240) == 0, Path(job.runner["log"]).read_text()[-2000:]

    done = jobs.get(job.id)
    assert done.state is JobState.SUCCEEDED and done.reason.startswith("promoted: recent hold-out")
    assert done.result is not None and done.result["decision"]["promote"] is True
    new = ModelRef.parse(done.result["challenger"])
    assert new.name == champion.ref.name and new.version > champion.ref.version  # type: ignore[operator]
    with Registry.open(champion.settings) as registry:
        version = registry.show(new)
    lineage = version.manifest.recipe["retrain"]
    assert version.manifest.parent == champion.ref
    assert lineage["job_id"] == job.id and lineage["trigger"] == "manual"
    assert lineage["parent"] == str(champion.ref) and lineage["datasets"] == ["shifted:1"]
    assert lineage["mix"]["recent"][0]["holdout"] > 0 and lineage["init"] == "champion"
    assert lineage["evaluation"]["challenger"]["recent"]["samples"] > 0
    # The original data stays the parent's, so the next job compares on the same test split.
    assert version.manifest.source_data_hash == champion.clean.content_hash
    # Its checkpoint is stored: the next retrain warm-starts from it without --checkpoint.
    again = prepare(RetrainSpec(model=new, data=(champion.shifted,)), champion.settings)
    assert again.model == new
    assert [line.line for line in jobs.logs(job.id)][:2] == [
        f"champion {champion.ref}; edge variant: none",
        "step assemble",
    ]


def test_a_refused_challenger_records_why_and_registers_nothing(
    champion: Champion, jobs: JobStore, tmp_path: Path
) -> None:
    before = _versions(champion)
    spec = _spec(champion, min_recent_gain=0.99, work_dir=str(tmp_path / "job"))
    job = jobs.create(KIND, champion.ref.name, prepare(spec, champion.settings).to_dict())

    done = run_job(job.id, champion.settings)  # in this process: the rule is under test here

    assert done.state is JobState.SUCCEEDED
    assert done.reason.startswith("refused: not better on recent data by more than +99.00 pp")
    assert done.result is not None and done.result["challenger"] is None
    assert _versions(champion) == before
    assert jobs.active(champion.ref.name) is None  # the model is free again


def test_a_second_retrain_while_one_runs_is_409_naming_it_and_a_cancel_stops_it(
    champion: Champion, jobs: JobStore
) -> None:
    before = _versions(champion)
    executor = LocalProcessExecutor()
    first = submit(_spec(champion, epochs=500), champion.settings, jobs, executor)

    with pytest.raises(JobRunningError) as refused:
        submit(_spec(champion), champion.settings, jobs, executor)
    assert refused.value.job_id == first.id and refused.value.http_status == 409
    assert refused.value.to_dict()["job_id"] == first.id

    _until(jobs, first.id, lambda j: j.state is JobState.RUNNING)
    cancel_job(first.id, jobs, executor)
    assert executor.wait(first.runner, 60) is not None  # the process ended itself

    done = jobs.get(first.id)
    assert done.state is JobState.CANCELLED
    assert done.reason.startswith("cancelled on request")
    assert "nothing was registered" in done.reason
    assert _versions(champion) == before
    assert jobs.active(champion.ref.name) is None


def test_a_job_whose_process_died_is_failed_with_the_reason_by_recovery(
    champion: Champion, jobs: JobStore
) -> None:
    before = _versions(champion)
    executor = LocalProcessExecutor()
    job = submit(_spec(champion, epochs=500), champion.settings, jobs, executor)
    _until(jobs, job.id, lambda j: j.state is JobState.RUNNING)
    os.killpg(job.runner["pid"], signal.SIGKILL)  # a crash: nothing in the job runs again
    executor.wait(job.runner, 30)

    assert recover(jobs, executor, champion.settings) != []
    failed = jobs.get(job.id)
    assert failed.state is JobState.FAILED
    assert "ended without finishing" in failed.reason and "nothing was registered" in failed.reason
    assert f"edgeloop retrain {champion.ref.name}" in failed.reason
    assert _versions(champion) == before and jobs.active(champion.ref.name) is None


def test_recovery_removes_the_versions_a_dead_job_had_registered(
    champion: Champion, jobs: JobStore
) -> None:
    """A process killed between registering the challenger and its edge variant."""
    import dataclasses

    before = _versions(champion)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    job = jobs.create(KIND, champion.ref.name, {"model": str(champion.ref)})
    jobs.start(job.id, {"executor": "local-process", "host": os.uname().nodename,
                        "pid": dead.pid, "start": None})  # fmt: skip
    jobs.progress(job.id, "register", 0.9)
    with Registry.open(champion.settings) as registry:
        old, path = registry.resolve(champion.ref)
        recipe = {**old.manifest.recipe, "retrain": {"job_id": job.id}}
        half = registry.publish(path, dataclasses.replace(old.manifest, recipe=recipe))

    recover(jobs, LocalProcessExecutor(), champion.settings)

    failed = jobs.get(job.id)
    assert failed.state is JobState.FAILED and "during step register" in failed.reason
    assert f"removed the versions it had registered: {half.ref}" in failed.reason
    assert _versions(champion) == before


def test_a_data_set_without_labels_is_refused_before_any_job_exists(
    champion: Champion, jobs: JobStore
) -> None:
    x = champion.clean.x[:20]
    ref = store_samples(champion.settings, "unlabelled", champion.clean.subset(np.arange(20)), x,
                        unlabelled(20))  # fmt: skip
    with pytest.raises(DataError, match=r"unlabelled:1 has no labelled sample \(20 unlabelled\)"):
        submit(_spec(champion, data=(ref,)), champion.settings, jobs, LocalProcessExecutor())
    assert jobs.list(champion.ref.name, active=True) == []


def test_a_data_set_of_one_class_is_refused_naming_the_class(champion: Champion) -> None:
    rows = np.flatnonzero(champion.clean.y == 3)[:15]
    ds = champion.clean.subset(rows)
    ref = store_samples(champion.settings, "threes", ds, ds.x)
    with pytest.raises(DataError, match=r"threes:1 is labelled with one class only \('3', 15"):
        prepare(_spec(champion, data=(ref,)), champion.settings)


def test_a_missing_data_set_and_a_missing_checkpoint_are_named(champion: Champion) -> None:
    with pytest.raises(NotFoundError, match="no stored data set named 'nope'"):
        prepare(_spec(champion, data=(DatasetRef("nope"),)), champion.settings)
    with pytest.raises(ConfigError, match="no torch checkpoint in the registry") as err:
        prepare(_spec(champion, checkpoint=None), champion.settings)
    assert "--from-scratch" in str(err.value.hint)
    scratch = prepare(_spec(champion, checkpoint=None, init=Init.SCRATCH), champion.settings)
    assert scratch.data == (DatasetRef("shifted", 1),)  # versions pinned


def test_an_edge_variant_that_fails_to_publish_takes_its_challenger_back_out(
    champion: Champion, tmp_path: Path
) -> None:
    import dataclasses

    from edgeloop.core.errors import EdgeError
    from edgeloop.pipeline.retrain_register import register_all

    before = _versions(champion)
    with Registry.open(champion.settings) as registry:
        old, path = registry.resolve(champion.ref)
    challenger = dataclasses.replace(old.manifest, parent=champion.ref)
    edge = dataclasses.replace(old.manifest, name="digits-mlp-edge")
    with pytest.raises(EdgeError, match="gone.onnx"):
        register_all(
            champion.settings, (path, challenger), (tmp_path / "gone.onnx", edge), champion.clean
        )
    assert _versions(champion) == before  # the challenger published first was removed again
