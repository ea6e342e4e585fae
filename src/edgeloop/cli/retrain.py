"""``edgeloop retrain MODEL`` and ``edgeloop jobs list|show|cancel|recover``.

The job runs as its own process (``LocalProcessExecutor``) against the registry of the edgeloop
home; this command queues it, follows its log on stderr until it ends (``--detach``: returns at
once) and prints the job record. ``--rollout`` then publishes the new edge variant (or the
challenger when there is none) with its lineage to a control plane and rolls it out in guarded
waves, through the same code as ``edgeloop fleet publish`` and ``fleet deploy``.

Exit codes: 0 when the job succeeded (promoted, or refused with the reason recorded: see
``decision``), 1 when it failed, 130 when it was cancelled (Ctrl-C cancels it).
"""

from __future__ import annotations

import time
from contextlib import closing
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from edgeloop.cli.output import OutputFormat, emit, err_console

Home = Annotated[
    Path | None,
    typer.Option("--home", help="edgeloop home folder [default: $EDGELOOP_HOME or ~/.edgeloop]"),
]
FormatOption = Annotated[OutputFormat, typer.Option("--format", help="table or json")]
POLL_S = 0.5

jobs_app = typer.Typer(no_args_is_help=True, help="Retraining jobs: list, show, cancel, recover.")


def retrain(
    model: Annotated[str, typer.Argument(help="The champion, NAME or NAME:VERSION.")],
    data: Annotated[
        list[str],
        typer.Option(
            "--data", help="Stored data set NAME:VERSION of recent labelled samples (repeatable)."
        ),
    ],
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            help="The champion's torch checkpoint folder to warm-start from (default: "
            "the one the registry holds for it)."
        ),
    ] = None,
    from_scratch: Annotated[
        bool, typer.Option("--from-scratch", help="Train from a fresh initialisation.")
    ] = False,
    epochs: Annotated[
        int | None, typer.Option(help="Epochs (default: the parent's recipe).")
    ] = None,
    holdout: Annotated[float, typer.Option(help="Share of recent samples held out.")] = 0.3,
    max_original_drop: Annotated[
        float, typer.Option(help="Accuracy the challenger may lose on the original test split.")
    ] = 0.01,
    min_recent_gain: Annotated[
        float, typer.Option(help="Accuracy it must gain on the recent hold-out (more than).")
    ] = 0.0,
    recent_repeat: Annotated[
        int, typer.Option(help="Repeat recent train samples N times (0: about 25 % of the mix).")
    ] = 0,
    trigger: Annotated[str, typer.Option(help="manual, drift-alert, accuracy-floor, schedule.")] = (
        "manual"
    ),
    seed: Annotated[int, typer.Option(help="Seeds the recent split and training.")] = 0,
    optimize: Annotated[
        bool, typer.Option(help="Rebuild the champion's edge variant with its recipe.")
    ] = True,
    detach: Annotated[bool, typer.Option(help="Queue the job and return its id.")] = False,
    rollout: Annotated[
        bool, typer.Option(help="When promoted: publish and roll out in guarded waves.")
    ] = False,
    waves: Annotated[str, typer.Option(help="Rollout waves, e.g. 1,50%,100%.")] = "1,50%,100%",
    control: Annotated[str | None, typer.Option(envvar="EDGELOOP_CONTROL_URL")] = None,
    token: Annotated[str | None, typer.Option(envvar="EDGELOOP_ADMIN_TOKEN")] = None,
    home: Home = None,
    format: FormatOption = OutputFormat.TABLE,
) -> None:
    """Retrain MODEL on recent labelled data; promote the challenger only if it wins."""
    from edgeloop.core.settings import Settings
    from edgeloop.pipeline.retrain_executor import LocalProcessExecutor
    from edgeloop.pipeline.retrain_job import submit
    from edgeloop.pipeline.retrain_spec import RetrainSpec
    from edgeloop.registry.job_store import JobStore

    spec = RetrainSpec.from_dict(
        {
            "model": model,
            "data": list(data),
            "init": "scratch" if from_scratch else "champion",
            "checkpoint": None if checkpoint is None else str(checkpoint.resolve()),
            "epochs": epochs,
            "holdout": holdout,
            "max_original_drop": max_original_drop,
            "min_recent_gain": min_recent_gain,
            "recent_repeat": recent_repeat,
            "trigger": trigger,
            "seed": seed,
            "optimize": optimize,
        }
    )
    settings = Settings.load(home)
    executor = LocalProcessExecutor()
    store = JobStore(settings.db_url)
    try:
        job = submit(spec, settings, store, executor)
        err_console.print(f"job {job.id} queued (log: {job.runner.get('log')})", highlight=False)
        if not detach:
            job = _follow(store, executor, job.id, settings)
    finally:
        store.close()
    body = job.to_dict()
    if rollout and job.result and job.result.get("challenger"):
        body["rollout"] = _rollout(job.result, waves, control, token, home)
    emit(body, format, lambda c: _render(c, body))
    if not detach and job.state.value != "succeeded":
        raise typer.Exit(130 if job.state.value == "cancelled" else 1)


def _follow(store: Any, executor: Any, job_id: str, settings: Any) -> Any:
    """Print the job's new log lines until it ends; Ctrl-C cancels it."""
    from edgeloop.pipeline.retrain_job import cancel, recover

    seen = 0
    try:
        while True:
            for line in store.logs(job_id, after=seen):
                err_console.print(f"  {line.line}", highlight=False, markup=False)
                seen = line.seq
            job = store.get(job_id)
            if not job.active:
                return job
            if executor.alive(job.runner) is False:  # it died: end it with the reason
                recover(store, executor, settings, model=job.model)
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        err_console.print(f"cancelling job {job_id} ...")
        cancel(job_id, store, executor)
        executor.wait(store.get(job_id).runner, 30)
        return store.get(job_id)


def _rollout(
    result: Any, waves: str, control: str | None, token: str | None, home: Path | None
) -> Any:
    """Publish the promoted version (edge variant first choice) with its lineage, then deploy."""
    from edgeloop.cli import fleet

    ref = result.get("edge") or result["challenger"]
    fleet._publish_ref(ref, True, None, control, token, None, home)
    with fleet._client(control, token, None, home) as client:
        spec = {
            "name": ref.split(":")[0],
            "selector": {"labels": {}},
            "model": ref,
            "plan": {
                "waves": [w.strip() for w in waves.split(",") if w.strip()],
                "soak_s": 30,
                "watch_s": 30,
                "guard": {"require_self_test": True},
            },
        }
        return client.deploy(spec)


def _render(console: Console, body: dict[str, Any]) -> None:
    result = body.get("result") or {}
    console.print(f"job {body['id']}: {body['state']} ({body['model']})", highlight=False)
    console.print(f"  {body['reason']}", highlight=False, markup=False)
    if result.get("challenger"):
        console.print(f"  registered {result['challenger']}", highlight=False)
    if result.get("edge"):
        console.print(f"  edge variant {result['edge']}", highlight=False)
    if "rollout" in body:
        console.print(f"  rollout {body['rollout'].get('id')} started", highlight=False)


@jobs_app.command("list")
def jobs_list(
    model: Annotated[str | None, typer.Option(help="Only this model's jobs.")] = None,
    active: Annotated[bool, typer.Option(help="Only queued or running jobs.")] = False,
    home: Home = None,
    format: FormatOption = OutputFormat.TABLE,
) -> None:
    """Jobs, newest first."""
    with _store(home) as store:
        found = [j.to_dict() for j in store.list(model, active=active)]

    def render(console: Console) -> None:
        for j in found:
            console.print(
                f"{j['id']}  {j['model']:<20} {j['state']:<10} {j['step']:<10} "
                f"{j['progress']:.0%}  {j['created_at'][:19]}",
                highlight=False,
            )

    emit({"jobs": found}, format, render)


@jobs_app.command("show")
def jobs_show(
    job_id: Annotated[str, typer.Argument(help="The job's id.")],
    home: Home = None,
    format: FormatOption = OutputFormat.TABLE,
) -> None:
    """A job's record and its log."""
    with _store(home) as store:
        body = {**store.get(job_id).to_dict(), "log": [x.to_dict() for x in store.logs(job_id)]}

    def render(console: Console) -> None:
        _render(console, body)
        for line in body["log"]:
            console.print(f"  {line['at'][11:19]} {line['line']}", highlight=False, markup=False)

    emit(body, format, render)


@jobs_app.command("cancel")
def jobs_cancel(
    job_id: Annotated[str, typer.Argument(help="The job's id.")],
    home: Home = None,
    format: FormatOption = OutputFormat.TABLE,
) -> None:
    """Ask a job to stop (its process stops within about a second)."""
    from edgeloop.pipeline.retrain_executor import LocalProcessExecutor
    from edgeloop.pipeline.retrain_job import cancel

    with _store(home) as store:
        body = cancel(job_id, store, LocalProcessExecutor()).to_dict()
    emit(body, format, lambda c: _render(c, body))


@jobs_app.command("recover")
def jobs_recover(home: Home = None, format: FormatOption = OutputFormat.TABLE) -> None:
    """Fail the jobs whose process is gone, removing what they registered."""
    from edgeloop.core.settings import Settings
    from edgeloop.pipeline.retrain_executor import LocalProcessExecutor
    from edgeloop.pipeline.retrain_job import recover

    with _store(home) as store:
        ended = [j.to_dict() for j in recover(store, LocalProcessExecutor(), Settings.load(home))]

    def render(console: Console) -> None:
        for j in ended:
            _render(console, j)
        if not ended:
            console.print("no job needed recovering")

    emit({"recovered": ended}, format, render)


def _store(home: Path | None) -> closing[Any]:
    from edgeloop.core.settings import Settings
    from edgeloop.registry.job_store import JobStore

    return closing(JobStore(Settings.load(home).db_url))
