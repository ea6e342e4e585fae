"""``edgeloop data add|export`` and the stored part of ``data list|show``: data set versions.

Stored versions live in the registry of the edgeloop home (its database and artifact store).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from edgeloop.cli.output import OutputFormat, emit, err_console
from edgeloop.core.settings import Settings

if TYPE_CHECKING:  # the store pulls SQLAlchemy: import it only when a command runs
    from edgeloop.registry.dataset_library import DatasetLibrary
    from edgeloop.registry.datasets import DatasetVersion

Home = Annotated[
    Path | None,
    typer.Option("--home", help="edgeloop home folder [default: $EDGELOOP_HOME or ~/.edgeloop]"),
]
FormatOption = Annotated[OutputFormat, typer.Option("--format", help="table or json")]
StoredRef = Annotated[
    str, typer.Argument(help="A stored data set: NAME:VERSION (NAME alone: the latest)")
]


def open_library(home: Path | None) -> DatasetLibrary:
    from edgeloop.registry.dataset_library import DatasetLibrary

    return DatasetLibrary.open(Settings.load(home))


def stored_versions(home: Path | None = None) -> list[DatasetVersion]:
    """Every stored version; none (and nothing created) when the default database is absent."""
    settings = Settings.load(home)
    prefix = "sqlite:///"
    if settings.db_url.startswith(prefix) and not Path(settings.db_url[len(prefix) :]).exists():
        return []
    with open_library(home) as library:
        return library.list()


def is_stored_ref(spec: str) -> bool:
    """Whether ``spec`` names a stored version (NAME:VERSION) rather than a file or bundled set."""
    name, sep, version = spec.partition(":")
    return bool(sep and name and version.isdigit()) and not Path(spec).exists()


def stored_table(versions: list[DatasetVersion]) -> Table:
    t = Table(title="stored data set versions (NAME:VERSION; `edgeloop data show` for more)")
    t.add_column("ref", no_wrap=True)
    for col in ("samples", "labelled", "sample shape", "classes", "model", "created"):
        t.add_column(col, justify="right" if col in ("samples", "labelled") else "left")
    for v in versions:
        e = v.entry
        t.add_row(
            str(v.ref),
            f"{e.samples:,}",
            f"{e.labelled:,}",
            "x".join(map(str, e.sample_shape)),
            str(len(e.classes)),
            e.provenance.model or "n/a",
            v.created_at.strftime("%Y-%m-%d %H:%M:%SZ"),
        )
    return t


def show_stored(spec: str, home: Path | None, format: OutputFormat) -> None:
    """``data show NAME:VERSION``: the row of a stored version and its class counts."""
    with open_library(home) as library:
        version = library.get(spec)
        samples = library.samples(version.ref)
    counts = {c: 0 for c in samples.classes}
    for label in samples.y.tolist():
        if label >= 0:
            counts[samples.classes[label]] += 1
    result: dict[str, Any] = {**version.to_dict(), "class_counts": counts}

    def render(console: Console) -> None:
        t = Table(title=f"stored data set {version.ref}", show_header=False)
        t.add_column("figure")
        t.add_column("value", overflow="fold")
        for key in ("samples", "labelled", "unlabelled", "modality", "content_hash", "created_at"):
            t.add_row(key.replace("_", " "), str(result[key]))
        t.add_row("sample shape", "x".join(map(str, version.entry.sample_shape)))
        for key, value in result["provenance"].items():
            shown = ", ".join(map(str, value)) if isinstance(value, list) else value
            t.add_row(key.replace("_", " "), str(shown) if shown not in (None, "") else "n/a")
        console.print(t)
        c = Table(title="labelled samples per class")
        c.add_column("class")
        c.add_column("samples", justify="right")
        for name, n in counts.items():
            c.add_row(name, f"{n:,}")
        console.print(c)

    emit(result, format, render)


def add(
    name: Annotated[str, typer.Argument(help="The stored data set's name (a new version of it)")],
    spec: Annotated[str, typer.Argument(help="A bundled name or a data file the loaders read")],
    unlabelled: Annotated[
        bool, typer.Option("--unlabelled", help="Store the samples without their labels.")
    ] = False,
    model: Annotated[
        str | None, typer.Option("--model", help="Provenance: the model that served them.")
    ] = None,
    home: Home = None,
    format: FormatOption = OutputFormat.TABLE,
) -> None:
    """Store a data set as the next immutable version of NAME (sample ids: row numbers)."""
    import numpy as np

    from edgeloop.data import load_data
    from edgeloop.data.samples import UNLABELLED, SampleSet
    from edgeloop.registry.datasets import Provenance

    with err_console.status(f"loading {spec}"):
        ds = load_data(spec)
    samples = SampleSet.from_dataset(ds)
    if unlabelled:
        samples = SampleSet(
            samples.x, np.full(len(ds), UNLABELLED, np.int64), samples.sample_ids,
            samples.classes, samples.modality,
        )  # fmt: skip
    provenance = Provenance(model=model, note=f"added from {spec}")
    with open_library(home) as library:
        version = library.add(name, samples, provenance)
    emit(version.to_dict(), format, lambda c: c.print(stored_table([version])))


def export(
    ref: StoredRef,
    out: Annotated[Path, typer.Option("--out", help="FILE.npz or FILE.csv to write")],
    home: Home = None,
    format: FormatOption = OutputFormat.TABLE,
) -> None:
    """Write a stored version's labelled samples as .npz or .csv (what `--data` reads)."""
    with open_library(home) as library:
        version, written = library.export(ref, out)
    result = {
        "ref": str(version.ref),
        "output": str(out),
        "samples": written,
        "left_out_unlabelled": version.entry.samples - written,
    }
    emit(
        result,
        format,
        lambda c: c.print(
            f"wrote {written:,} labelled samples of {version.ref} to {out} "
            f"({result['left_out_unlabelled']:,} unlabelled left out)"
        ),
    )
