"""``edgeloop data label export|import``: the label queue of a stored data set version.

Tasks go out in Label Studio's JSON task format or CSV; answers come back from Label Studio's
JSON export or the filled-in CSV. Applied labels make a new version (the old one is its parent).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edgeloop.cli.data_stored import FormatOption, Home, StoredRef, open_library
from edgeloop.cli.output import OutputFormat, emit
from edgeloop.data.labels import LabelFormat, Outcome

app = typer.Typer(
    help="Label queue: tasks out (Label Studio JSON, CSV), answers back in.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
_SHOWN = 20  # reasons listed in the table; --format json has them all


@app.command("export")
def export_tasks(
    ref: StoredRef,
    out: Annotated[Path, typer.Option("--out", help="The task file to write")],
    file_format: Annotated[
        LabelFormat, typer.Option("--format", help="label-studio (JSON tasks) or csv")
    ] = LabelFormat.LABEL_STUDIO,
    all_samples: Annotated[
        bool, typer.Option("--all", help="Also the samples that already have a label.")
    ] = False,
    home: Home = None,
) -> None:
    """Write the unlabelled samples of a stored version as labelling tasks."""
    from edgeloop.data.labels import write_tasks

    with open_library(home) as library:
        version = library.get(ref)
        samples = library.samples(version.ref)
    count = write_tasks(samples, out, file_format, only_unlabelled=not all_samples)
    typer.echo(f"wrote {count} {file_format.value} tasks of {version.ref} to {out}")


@app.command("import")
def import_labels(
    ref: StoredRef,
    file: Annotated[Path, typer.Argument(help="Label Studio JSON export (.json) or CSV (.csv)")],
    file_format: Annotated[
        LabelFormat | None,
        typer.Option("--file-format", help="label-studio or csv [default: by the suffix]"),
    ] = None,
    home: Home = None,
    format: FormatOption = OutputFormat.TABLE,
) -> None:
    """Read labels back; applied ones make a new version. Counts applied, conflicting, unknown."""
    from edgeloop.data.labels import read_answers

    answers = read_answers(file, file_format)
    with open_library(home) as library:
        done = library.label(ref, answers, note=f"labels from {file.name}")
    result, parent, new = done.labels, done.parent, done.version
    body = done.to_dict()

    def render(console: Console) -> None:
        t = Table(title=f"labels from {file}", show_header=False)
        t.add_column("outcome")
        t.add_column("count", justify="right")
        for outcome, n in result.counts().items():
            t.add_row(outcome, str(n))
        console.print(t)
        notable = [i for i in result.items if i.outcome is not Outcome.APPLIED]
        for item in notable[:_SHOWN]:
            console.print(f"{item.outcome.value}: {escape(item.reason)}", highlight=False)
        if len(notable) > _SHOWN:
            console.print(f"... and {len(notable) - _SHOWN} more (--format json lists them all)")
        if new is None:
            made = "no new version (nothing applied)"
        else:
            made = f"new version {new.ref}" if done.created else f"already stored as {new.ref}"
        console.print(f"{parent.ref} -> {made}")

    emit(body, format, render)
