"""The ``edgeloop`` command: one Typer app, each command group in its own module.

Command modules are imported lazily where they pull heavy libraries, so ``edgeloop --help`` and
``edgeloop --version`` stay fast and never import torch.
"""

from __future__ import annotations

import re
import sys
from typing import Annotated

import typer
from rich.markup import escape

from edgeloop import __version__
from edgeloop.cli import (
    agent,
    bench,
    control,
    convert,
    data,
    export,
    fl,
    fleet,
    fleet_train,
    optimize,
    quickstart,
    registry,
    serve,
    site,
    train,
)
from edgeloop.cli import retrain as retrain_cli
from edgeloop.cli.output import err_console
from edgeloop.core.errors import EdgeError

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # terminal colour escapes

app = typer.Typer(
    name="edgeloop",
    help="edgeloop: collect -> prepare -> train -> export -> measure -> register, for edge AI.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
app.add_typer(data.app, name="data", help="Bundled and user data sets: list, inspect, clean.")
app.add_typer(
    registry.app, name="registry", help="Model registry: publish, list, show, remove versions."
)
app.command("train", help="Train a model from the zoo on a data set.")(train.train)
app.command("export", help="Export a trained checkpoint to ONNX with a parity check.")(
    export.export
)
app.command("bench", help="Measure latency, throughput, memory, accuracy and power.")(bench.bench)
app.command("optimize", help="Apply one optimization method and measure parent vs variant.")(
    optimize.optimize
)
app.command("convert", help="Convert to edge targets (TFLite, TFLM, OpenVINO, Core ML, ...).")(
    convert.convert
)
app.command("tune", help="Search optimization recipes under a budget; measured Pareto set.")(
    optimize.tune
)
app.command(
    "serve", help="Serve models over HTTP (Open Inference Protocol v2, /predict, /metrics)."
)(serve.serve)
app.command(
    "control", help="Run the control plane: fleet, deployments, staged rollouts, signed updates."
)(control.control)
app.command("agent", help="Run the edge agent: enroll, update models safely, serve.")(agent.agent)
app.add_typer(
    fleet.app, name="fleet", help="A local fleet: control plane + N agents as OS processes."
)
fleet.app.command("train")(fleet_train.fleet_train)  # on-device training on a node
app.add_typer(fl.app, name="fl", help="Federated learning across the fleet's agents.")
app.add_typer(site.app, name="site", help="Site profiles the SDK connects to: add, list, rm.")
app.command("quickstart", help="Run the loop end to end on a bundled data set.")(
    quickstart.quickstart
)
app.command("retrain", help="Retrain a model on recent labelled data (champion/challenger).")(
    retrain_cli.retrain
)
app.add_typer(retrain_cli.jobs_app, name="jobs", help="Retraining jobs: list, show, cancel.")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"edgeloop {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """edgeloop: the whole edge-AI loop in one tool."""


def plain(text: str) -> str:
    """``text`` safe to print with rich: its own ANSI escapes dropped (a library's colours),
    its brackets escaped so ``pip install 'edgeloop[nncf]'`` is not read as markup."""
    return escape(_ANSI.sub("", text))


def main() -> None:
    """Entry point: run the app; an EdgeError becomes a message on stderr and its exit code.

    Usage errors, ``--help`` and ``typer.Exit`` are handled by the app itself (standalone mode);
    an EdgeError passes through it, since the pretty traceback printer is off.
    """
    try:
        app()
    except EdgeError as exc:
        err_console.print(
            f"[bold red]error:[/] {plain(exc.message)}", highlight=False, soft_wrap=True
        )
        if exc.hint:
            err_console.print(
                f"  [bold]hint:[/] {plain(exc.hint)}", highlight=False, soft_wrap=True
            )
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
