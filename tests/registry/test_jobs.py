"""Job records in a real registry database (SQLite; PostgreSQL when EDGELOOP_TEST_POSTGRES_URL
is set): one per model, allowed moves, cancel, log."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.postgres import PG_PARAM

from edgeloop.core.errors import ConflictError, NotFoundError
from edgeloop.registry.job_store import JobStore
from edgeloop.registry.jobs import JobRunningError, JobState


@pytest.fixture(params=["sqlite", PG_PARAM])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    url = (
        f"sqlite:///{tmp_path / 'registry.db'}"
        if request.param == "sqlite"
        else str(request.getfixturevalue("pg_url"))
    )
    s = JobStore(url)
    yield s
    s.close()


def test_a_second_job_for_a_model_is_409_naming_the_first(store: JobStore) -> None:
    first = store.create("retrain", "digits", {"a": 1})
    other = store.create("retrain", "other-model", {})
    with pytest.raises(JobRunningError) as err:
        store.create("retrain", "digits", {})
    assert err.value.job_id == first.id and err.value.http_status == 409
    assert f"queued already: {first.id}" in err.value.message
    assert store.active("digits") == first and store.active("other-model") == other

    store.finish(first.id, JobState.FAILED, "given up")
    assert store.create("retrain", "digits", {}).model == "digits"  # the model is free again


def test_a_job_moves_only_along_the_allowed_transitions(store: JobStore) -> None:
    job = store.create("retrain", "m", {})
    running = store.start(job.id, {"pid": 1})
    assert running.state is JobState.RUNNING and running.runner == {"pid": 1}
    assert store.progress(job.id, "train", 0.5).step == "train"
    done = store.finish(job.id, JobState.SUCCEEDED, "promoted", {"challenger": "m:2"})
    assert done.progress == 1.0 and done.result == {"challenger": "m:2"}
    with pytest.raises(ConflictError, match="is succeeded; it cannot become failed"):
        store.finish(job.id, JobState.FAILED, "late")
    with pytest.raises(ConflictError, match="nothing to cancel"):
        store.request_cancel(job.id)
    assert store.get(job.id).reason == "promoted"  # unchanged by the refused moves


def test_cancel_is_recorded_and_seen_by_the_heartbeat(store: JobStore) -> None:
    job = store.create("retrain", "m", {})
    assert store.heartbeat(job.id) is False
    assert store.request_cancel(job.id).cancel_requested
    assert store.heartbeat(job.id) is True


def test_log_lines_are_numbered_in_order_and_read_after_a_mark(store: JobStore) -> None:
    job = store.create("retrain", "m", {})
    for line in ("a", "b", "c"):
        store.log(job.id, line)
    assert [(x.seq, x.line) for x in store.logs(job.id)] == [(1, "a"), (2, "b"), (3, "c")]
    assert [x.line for x in store.logs(job.id, after=2)] == ["c"]


def test_an_unknown_job_is_named(store: JobStore) -> None:
    with pytest.raises(NotFoundError, match="no job with id 'nope'"):
        store.get("nope")
    with pytest.raises(NotFoundError):
        store.progress("nope", "x", 0.1)
