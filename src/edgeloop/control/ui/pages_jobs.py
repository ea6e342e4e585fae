"""The retraining-job pages: every job, one job (state, progress, log tail) and its Cancel.

They read the job store ``GET /api/v1/jobs[/{id}]`` reads (:class:`JobStore` on the registry
database), and Cancel goes through :func:`edgeloop.pipeline.retrain_job.cancel` as
``POST /api/v1/jobs/{id}/cancel`` does, after the dashboard's CSRF and role check.
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from edgeloop.control.plane import ControlPlane
from edgeloop.control.ui import security
from edgeloop.control.ui.html import Html, escape, join, url
from edgeloop.control.ui.layout import View
from edgeloop.control.ui.sessions import Session
from edgeloop.control.ui.widgets import badge, code, link, note, pairs, section, table
from edgeloop.pipeline.retrain_executor import LocalProcessExecutor
from edgeloop.pipeline.retrain_job import cancel
from edgeloop.registry.job_store import JobStore
from edgeloop.registry.jobs import Job, LogLine

LISTED = 200  # jobs on the list page, newest first
LOG_TAIL = 200  # the last lines of a job's log on its page


class JobPages:
    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        self.store = JobStore(plane.settings.db_url)  # its own engine: closed with the plane
        plane.on_close(self.store.close)
        # The executor the jobs API uses by default: it finds a job's process by pid and start.
        self.executor = LocalProcessExecutor()

    async def list(self, request: Request, session: Session) -> View:
        found = await run_in_threadpool(self.store.list)
        rows = [
            (
                link(url("jobs", j.id), j.id[:12]),
                j.kind,
                j.model,
                badge(j.state.value),
                j.step,
                progress(j.progress),
                j.created_at.isoformat(timespec="seconds"),
                _iso(j),
            )
            for j in found[:LISTED]
        ]
        heads = ("Job", "Kind", "Model", "State", "Step", "Progress", "Created", "Finished")
        body = join(
            [
                table("Retraining jobs, newest first", heads, rows, "no job started yet"),
                note("A job's data sets and the label queue have pages of their own."),
            ]
        )
        return View("Retraining jobs", "jobs", body)

    async def detail(self, request: Request, session: Session) -> View:
        job_id = request.path_params["job_id"]
        job = await run_in_threadpool(self.store.get, job_id)
        lines = await run_in_threadpool(self.store.logs, job_id, 0)
        return View(f"Job {job.id[:12]}", "jobs", content(job, lines, session))

    async def cancel(self, request: Request, session: Session) -> Response:
        job_id = request.path_params["job_id"]
        form = await security.form(request)
        given = form.get("csrf")
        security.check_action(session, given if isinstance(given, str) else None, "cancel a job")
        await run_in_threadpool(cancel, job_id, self.store, self.executor)
        return RedirectResponse(str(url("jobs", job_id)), 303, headers=security.HEADERS)


def content(job: Job, lines: list[LogLine], session: Session) -> Html:
    facts = pairs(
        [
            ("Job", job.id),
            ("Kind", job.kind),
            ("Model", job.model),
            ("State", badge(job.state.value)),
            ("Step", job.step),
            ("Progress", progress(job.progress)),
            ("Cancel asked", "yes" if job.cancel_requested else "no"),
            ("Reason", job.reason or "none"),
            ("Created", job.created_at.isoformat(timespec="seconds")),
            ("Finished", _iso(job)),
        ]
    )
    tail = lines[-LOG_TAIL:]
    shown = f"the last {len(tail)} of {len(lines)} lines" if lines else "no line logged yet"
    text = join((f"{x.seq:>5} {x.at:%H:%M:%S} {x.line}" for x in tail), "\n")
    log = Html(f'<pre tabindex="0" class="doc" aria-label="Job log"><code>{text}</code></pre>')
    return join(
        [
            section("Job", join([facts, cancel_form(job, session)]), "job"),
            section(f"Log ({shown})", log, "log"),
            section("Result", code(None if job.result is None else dict(job.result)), "result"),
            section("Spec", code(dict(job.spec)), "spec"),
        ]
    )


def cancel_form(job: Job, session: Session) -> Html:
    """The Cancel button while the job runs; a read-only sign-in sees why there is none."""
    if not job.active:
        return Html("")
    if not session.may_act:
        return note("A read-only sign-in cannot cancel a job.")
    return Html(
        f'<form method="post" action="{url("jobs", job.id, "cancel")}" class="inline" '
        'data-confirm="Cancel this job?">'
        f'<input type="hidden" name="csrf" value="{escape(session.csrf)}">'
        '<button type="submit">Cancel job</button></form>'
    )


def progress(value: float) -> Html:
    pct = f"{value * 100:.0f}%"
    return Html(
        f'<progress max="1" value="{value:.3f}" aria-label="Progress">{escape(pct)}</progress> '
        f"{escape(pct)}"
    )


def _iso(job: Job) -> Any:
    return job.finished_at.isoformat(timespec="seconds") if job.finished_at else "not yet"
