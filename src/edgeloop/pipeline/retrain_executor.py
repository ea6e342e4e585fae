"""Executors: where a job's process runs. One small interface, a local implementation.

An executor starts ``python -m edgeloop.pipeline.retrain_job JOB_ID`` somewhere that reaches
the same registry database and artifact store, and can later say whether that process is still
alive. Everything else (progress, log, cancel, the end state) goes through the job record in
the database, so the pipeline does not know where it runs.

A cluster executor plugs in by implementing :class:`Executor`: ``submit`` creates a Kubernetes
Job / Ray task / Slurm batch job running the same command with ``EDGELOOP_DB`` and
``EDGELOOP_ARTIFACTS`` pointing at PostgreSQL and object storage, and returns its handle (the
cluster's job name); ``alive`` asks the cluster for it (None when it cannot tell: the job's
heartbeat decides then); ``stop`` deletes it. No pipeline code changes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from edgeloop.core.errors import StoreError
from edgeloop.core.settings import ARTIFACTS_ENV, DB_ENV, HOME_ENV, Settings
from edgeloop.registry.jobs import Job

EXECUTOR_ENV = "EDGELOOP_JOB_EXECUTOR"


class Executor(Protocol):
    """Starts job processes and tells whether one is alive."""

    name: str

    def submit(self, job: Job, settings: Settings) -> dict[str, Any]:
        """Start the job's process; return the handle recorded as the job's ``runner``."""
        ...

    def alive(self, runner: Mapping[str, Any]) -> bool | None:
        """Whether the process ``runner`` names still runs; None when this executor cannot
        tell (another host, another executor)."""
        ...

    def stop(self, runner: Mapping[str, Any]) -> None:
        """Stop the process (and what it started), if it still runs."""
        ...


def this_process() -> dict[str, Any]:
    """The runner record of the calling process: host, pid and the pid's start time (a pid
    reused by a later process has another start time)."""
    return {
        "executor": os.environ.get(EXECUTOR_ENV, "in-process"),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "start": _start_ticks(os.getpid()),
    }


def _start_ticks(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (start time in clock ticks since boot); None without /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def _state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


class LocalProcessExecutor:
    """Runs each job as a child process of this one, in its own session (process group), so
    stopping it stops the optimization workers it started too."""

    name = "local-process"

    def __init__(self, python: str | None = None) -> None:
        self.python = python or sys.executable
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    def submit(self, job: Job, settings: Settings) -> dict[str, Any]:
        """Raises StoreError when the process cannot be started."""
        work = Path(str(job.spec.get("work_dir") or settings.home / "jobs" / job.id))
        env = {**os.environ, HOME_ENV: str(settings.home), DB_ENV: settings.db_url}
        env[EXECUTOR_ENV] = self.name
        if settings.artifacts_url:
            env[ARTIFACTS_ENV] = settings.artifacts_url
        try:
            work.mkdir(parents=True, exist_ok=True)
            with (work / "runner.log").open("ab") as log:
                proc = subprocess.Popen(
                    [self.python, "-m", "edgeloop.pipeline.retrain_job", job.id],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                )
        except OSError as exc:
            raise StoreError(
                f"could not start the process of job {job.id}: {exc}",
                hint="check that the job folder is writable and Python can run edgeloop",
            ) from exc
        self._children[proc.pid] = proc
        # Reap it when it ends (no zombie is left while this process, the control plane, runs).
        threading.Thread(target=proc.wait, name=f"reap-job-{job.id[:8]}", daemon=True).start()
        return {
            "executor": self.name,
            "host": socket.gethostname(),
            "pid": proc.pid,
            "start": _start_ticks(proc.pid),
            "log": str(work / "runner.log"),
        }

    def alive(self, runner: Mapping[str, Any]) -> bool | None:
        pid = runner.get("pid")
        if runner.get("host") != socket.gethostname() or not isinstance(pid, int):
            return None
        child = self._children.get(pid)
        if child is not None and child.poll() is not None:
            return False  # our own child ended (and is reaped now)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # exists, owned by someone else
        if _state(pid) in ("Z", "X"):
            return False
        start = runner.get("start")
        return start is None or _start_ticks(pid) in (None, start)

    def stop(self, runner: Mapping[str, Any]) -> None:
        if not self.alive(runner):
            return
        pid = int(runner["pid"])
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)

    def wait(self, runner: Mapping[str, Any], timeout: float) -> int | None:
        """Wait for our own child to end; its exit code (None: not ours or still running)."""
        child = self._children.get(int(runner.get("pid", -1)))
        if child is None:
            return None
        try:
            return child.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
