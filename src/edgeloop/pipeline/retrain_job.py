"""A retraining job's life: checked and queued (:func:`submit`), run in its own process
(``python -m edgeloop.pipeline.retrain_job JOB_ID``, :func:`main`), cancelled on request,
recovered after a crash (:func:`recover`).

The process keeps its job record current: the step and progress, log lines, and a heartbeat
every :data:`HEARTBEAT_S` seconds that also reads whether a cancel was asked for. A cancel stops
the process (and the optimization workers it started) at once, except while it registers: that
short step finishes first, so a cancel never leaves half of a version pair behind.

Recovery (the CLI before a new job, the control plane when it starts) looks at every job still
queued or running whose process is gone: the versions it registered, if any, are removed (found
by the job id in their recipe) and the job is marked failed with the reason. This module imports
no torch: the control plane calls it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import sys
import threading
import traceback
import uuid
from collections.abc import Iterator
from datetime import timedelta

from edgeloop.core.errors import ConflictError, EdgeError
from edgeloop.core.settings import Settings
from edgeloop.core.types import ModelRef
from edgeloop.pipeline.retrain import JobCancelledError
from edgeloop.pipeline.retrain_executor import Executor, this_process
from edgeloop.pipeline.retrain_spec import KIND, Init, RetrainSpec
from edgeloop.registry.job_store import JobStore
from edgeloop.registry.jobs import Job, JobState
from edgeloop.registry.store import utc_now

HEARTBEAT_S = 1.0
# A job whose executor cannot tell whether it runs is taken for dead after this long without
# a heartbeat (a local process is checked directly, never by this).
STALE_S = 120.0


class JobReporter:
    """The :class:`~edgeloop.pipeline.retrain.Reporter` of a job record, with its heartbeat."""

    def __init__(self, store: JobStore, job_id: str) -> None:
        self.store = store
        self.job_id = job_id
        self.step_name = "started"
        self._cancel = threading.Event()
        self._stop = threading.Event()
        self._registering = threading.Lock()
        self._thread = threading.Thread(target=self._beat, name="job-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def step(self, name: str, progress: float) -> None:
        if self._cancel.is_set() or self.store.get(self.job_id).cancel_requested:
            raise JobCancelledError(f"cancelled on request before step {name}")
        self.step_name = name
        self.store.progress(self.job_id, name, progress)
        self.log(f"step {name}")

    def log(self, line: str) -> None:
        with contextlib.suppress(EdgeError):  # a log line lost is better than a job lost
            self.store.log(self.job_id, line)

    @contextlib.contextmanager
    def registering(self) -> Iterator[None]:
        """Held while versions are published. After a publish that went through the lock is
        kept: a cancel arriving from then on finds the job done, not "nothing registered"."""
        self._registering.acquire()
        try:
            if self._cancel.is_set() or self.store.get(self.job_id).cancel_requested:
                raise JobCancelledError("cancelled on request before step register")
            yield
        except BaseException:
            self._registering.release()
            raise

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                wanted = self.store.heartbeat(self.job_id)
            except EdgeError:
                continue
            if wanted and self._registering.acquire(blocking=False):
                self._cancel.set()
                self._stop_now()

    def _stop_now(self) -> None:
        """End the record as cancelled, then end this process and everything it started."""
        reason = f"cancelled on request during step {self.step_name}; nothing was registered"
        with contextlib.suppress(EdgeError):
            self.store.log(self.job_id, reason)
            self.store.finish(self.job_id, JobState.CANCELLED, reason)
        if os.getpgrp() == os.getpid():  # our own process group: the workers go too
            os.killpg(os.getpgrp(), signal.SIGKILL)
        os._exit(130)


def prepare(spec: RetrainSpec, settings: Settings) -> RetrainSpec:
    """Check a request before any job exists (no torch): the champion exists and can be warm-
    started, every data set exists and is labelled with two classes or more. Returns the spec
    with the champion's and the data sets' versions pinned.

    Raises:
        NotFoundError: the model or a data set does not exist.
        ConfigError: no checkpoint to warm-start from; classes or shape differ.
        DataError: a data set with no labelled sample or a single class.
    """
    from edgeloop.pipeline.retrain_data import check_labelled
    from edgeloop.pipeline.retrain_model import warm_start_source
    from edgeloop.registry.dataset_library import DatasetLibrary
    from edgeloop.registry.registry import Registry

    with Registry.open(settings) as registry:
        champion = registry.show(spec.model)
    if spec.init is Init.CHAMPION:
        warm_start_source(champion.manifest, spec.checkpoint, str(champion.ref))
    pinned = []
    with DatasetLibrary.open(settings) as library:
        for ref in spec.data:
            version = library.get(ref)
            ds = library.samples(version.ref).labelled_dataset(str(version.ref))
            check_labelled(ds, version.entry.samples)
            labels = champion.manifest.labels
            if labels and tuple(labels) != ds.classes:
                from edgeloop.core.errors import ConfigError

                raise ConfigError(
                    f"data set {version.ref} has classes {list(ds.classes)}; "
                    f"{champion.ref} has {list(labels)}",
                    hint="retrain on samples captured from this model (same classes, same order)",
                )
            pinned.append(version.ref)
    return dataclasses.replace(spec, model=ModelRef(champion.name, champion.version),
                               data=tuple(pinned))  # fmt: skip


def submit(spec: RetrainSpec, settings: Settings, store: JobStore, executor: Executor) -> Job:
    """Check ``spec`` (:func:`prepare`), recover dead jobs of the model, create the job record
    and start its process.

    Raises:
        JobRunningError: a job for the model is queued or running (409, naming it).
        EdgeError: from :func:`prepare`, or the process could not start (the job is failed).
    """
    spec = prepare(spec, settings)
    recover(store, executor, settings, model=spec.model.name)
    job_id = uuid.uuid4().hex
    work = spec.work_dir or str(settings.home / "jobs" / job_id)
    spec = dataclasses.replace(spec, work_dir=work)
    job = store.create(KIND, spec.model.name, spec.to_dict(), job_id=job_id)
    try:
        store.set_runner(job.id, executor.submit(job, settings))
    except EdgeError as exc:
        store.finish(job.id, JobState.FAILED, f"the job's process did not start: {exc.message}")
        raise
    return store.get(job.id)


def cancel(job_id: str, store: JobStore, executor: Executor) -> Job:
    """Ask a job to stop. A running process stops itself within a heartbeat; a job whose
    process is gone is ended here.

    Raises:
        NotFoundError: no such job. ConflictError: it ended already.
    """
    job = store.request_cancel(job_id)
    if job.runner and executor.alive(job.runner) is False:
        reason = f"cancelled on request; its process had ended during step {job.step}"
        with contextlib.suppress(ConflictError):
            store.finish(job.id, JobState.CANCELLED, reason)
    return store.get(job_id)


def recover(
    store: JobStore,
    executor: Executor,
    settings: Settings,
    *,
    model: str | None = None,
    stale_s: float = STALE_S,
) -> list[Job]:
    """Fail every queued or running job (of ``model``) whose process is gone, after removing
    the versions it registered; return the jobs ended here."""
    from edgeloop.pipeline.retrain_register import remove_job_versions

    ended = []
    for job in store.list(model, active=True):
        if not _dead(job, executor, stale_s):
            continue
        removed = remove_job_versions(settings, job.id, None)
        seen = "" if job.heartbeat_at is None else f", last heartbeat {job.heartbeat_at:%H:%M:%S}"
        reason = (
            f"its process ({_where(job)}) ended without finishing, during step {job.step}"
            f"{seen}; "
            + (f"removed the versions it had registered: {', '.join(removed)}" if removed
               else "nothing was registered")
            + f"; start it again with `edgeloop retrain {job.model}`"
        )  # fmt: skip
        try:
            ended.append(store.finish(job.id, JobState.FAILED, reason))
        except ConflictError:
            continue  # it ended by itself meanwhile
        store.log(job.id, reason)
    return ended


def _dead(job: Job, executor: Executor, stale_s: float) -> bool:
    alive = executor.alive(job.runner) if job.runner else None
    if alive is not None:
        return not alive
    last = job.heartbeat_at or job.created_at
    return utc_now() - last > timedelta(seconds=stale_s)


def _where(job: Job) -> str:
    r = job.runner
    if not r:
        return "never started"
    return f"{r.get('executor', '?')} pid {r.get('pid', '?')} on {r.get('host', '?')}"


def run_job(job_id: str, settings: Settings) -> Job:
    """Run job ``job_id`` in this process to its end state (what ``main`` does)."""
    from edgeloop.pipeline.retrain import run_retrain

    store = JobStore(settings.db_url)
    try:
        store.start(job_id, this_process())
        reporter = JobReporter(store, job_id)
        reporter.start()
        state, reason, result = JobState.FAILED, "", None
        try:
            spec = RetrainSpec.from_dict(store.get(job_id).spec)
            result = run_retrain(spec, settings, job_id, reporter)
            state, reason = JobState.SUCCEEDED, str(result["decision"]["reason"])
        except JobCancelledError as exc:
            state, reason = JobState.CANCELLED, f"{exc.message}; nothing was registered"
        except EdgeError as exc:
            reason = f"{type(exc).__name__}: {exc}"
            result = {"error": exc.to_dict()}
        except Exception as exc:  # a job must end with a reason, whatever broke
            reporter.log(traceback.format_exc())
            reason = f"unexpected {type(exc).__name__}: {exc}"
        finally:
            reporter.close()
        if state is not JobState.SUCCEEDED:  # a decision was logged by the run itself
            reporter.log(reason)
        try:
            return store.finish(job_id, state, reason, result)
        except ConflictError:  # ended meanwhile (recovered as dead by mistake): keep that end
            return store.get(job_id)
    finally:
        store.close()


def main(argv: list[str] | None = None) -> int:
    """``python -m edgeloop.pipeline.retrain_job JOB_ID``: exit 0 when the job succeeded."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m edgeloop.pipeline.retrain_job JOB_ID", file=sys.stderr)
        return 2
    try:
        job = run_job(args[0], Settings.load())
    except EdgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"job {job.id} {job.state.value}: {job.reason}", file=sys.stderr)
    return 0 if job.state is JobState.SUCCEEDED else 1


if __name__ == "__main__":
    sys.exit(main())
