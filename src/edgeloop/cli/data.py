"""``edgeloop data``: list the bundled and stored data sets, show (and optionally clean) any data
set; store, export and label versions (``data_stored``, ``data_labels``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edgeloop.cli import data_capture, data_labels, data_stored
from edgeloop.cli.data_stored import Home
from edgeloop.cli.output import OutputFormat, emit, err_console
from edgeloop.core.errors import ConfigError

if TYPE_CHECKING:
    from edgeloop.data import Dataset, LoadOptions

app = typer.Typer(
    help="Bundled, user and stored data sets: list, inspect, clean, store, export, label, capture.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command("add")(data_stored.add)
app.command("export")(data_stored.export)
app.command("capture")(data_capture.capture)
app.add_typer(data_labels.app, name="label")

FormatOption = Annotated[OutputFormat, typer.Option("--format", help="table or json")]
# The loaders' options (edgeloop.data.LoadOptions); `data show` and `train` take them.
LabelColumn = Annotated[
    str | None, typer.Option("--label-column", help="CSV: the label's column (default: label).")
]
FeaturesKey = Annotated[
    str | None,
    typer.Option("--features-key", help="JSONL: the features' key (default: features)."),
]
LabelKey = Annotated[
    str | None, typer.Option("--label-key", help="JSONL: the label's key (default: label).")
]
Color = Annotated[
    str | None,
    typer.Option("--color", help="Image folders: grey (default, one channel) or rgb (three)."),
]
ImageSize = Annotated[
    str | None,
    typer.Option(
        "--image-size", help="Image folders: resize every image to WIDTHxHEIGHT (bicubic)."
    ),
]


def load_options(
    label_column: str | None,
    features_key: str | None,
    label_key: str | None,
    color: str | None,
    image_size: str | None,
) -> LoadOptions:
    """The flags as one :class:`LoadOptions` (raises ConfigError for a bad value)."""
    from edgeloop.data.options import LoadOptions, parse_color, parse_size

    return LoadOptions(
        label_column=label_column,
        features_key=features_key,
        label_key=label_key,
        color=None if color is None else parse_color(color),
        image_size=None if image_size is None else parse_size(image_size),
    )


def load_noting(spec: str, options: LoadOptions) -> Dataset:
    """Load ``spec`` and say on stderr what loading converted (colour, size)."""
    from edgeloop.data import load_data

    with err_console.status(f"loading {spec}"):
        ds = load_data(spec, options)
    for note in ds.notes:
        err_console.print(f"note: {escape(note)}", highlight=False)
    return ds


@app.command("list")
def list_sets(home: Home = None, format: FormatOption = OutputFormat.TABLE) -> None:
    """List the bundled data sets and the stored data set versions of the edgeloop home."""
    from edgeloop.data import list_bundled

    with err_console.status("reading the bundled data sets"):
        infos = list_bundled()
    stored = data_stored.stored_versions(home)
    result = {
        "datasets": [info.to_dict() for info in infos],
        "stored": [v.to_dict() for v in stored],
    }

    def render(console: Console) -> None:
        t = Table(title="bundled data sets (use the name as --data; --format json for full paths)")
        # Names must stay whole (they are what users type); the file column folds instead.
        t.add_column("name", no_wrap=True, min_width=max(len(i.name) for i in infos))
        for col in ("modality", "task", "samples", "sample shape", "classes"):
            t.add_column(col, justify="right" if col == "samples" else "left")
        t.add_column("files", overflow="fold")
        for info in infos:
            shape = "n/a" if info.sample_shape is None else "x".join(map(str, info.sample_shape))
            t.add_row(
                info.name,
                info.modality.value,
                info.task.value,
                "n/a" if info.samples is None else f"{info.samples:,}",
                shape,
                str(len(info.classes)) if info.classes else "n/a",
                "\n".join(Path(s).name for s in info.sources) or (info.unavailable or ""),
            )
        console.print(t)
        if stored:
            console.print(data_stored.stored_table(stored))
        else:
            console.print("no stored data set versions (`edgeloop data add NAME DATA` stores one)")

    emit(result, format, render)


@app.command("show")
def show(
    spec: Annotated[
        str,
        typer.Argument(
            help="A bundled name (see `edgeloop data list`), a stored NAME:VERSION, or a path: "
            ".csv (with a 'label' column), .npz (x, y), .jsonl, .ts, or a folder of images, one "
            "sub-folder per class."
        ),
    ],
    clean: Annotated[
        bool,
        typer.Option(
            "--clean", help="Also clean the data (duplicates, outliers, missing values) and report."
        ),
    ] = False,
    label_column: LabelColumn = None,
    features_key: FeaturesKey = None,
    label_key: LabelKey = None,
    color: Color = None,
    image_size: ImageSize = None,
    home: Home = None,
    format: FormatOption = OutputFormat.TABLE,
) -> None:
    """Samples, shape, classes, content hash and source of a data set."""
    from edgeloop.data import clean as clean_data

    if data_stored.is_stored_ref(spec):
        if clean:
            raise ConfigError(
                f"--clean reads files and bundled sets, not the stored version {spec!r}",
                hint=f"export it first: edgeloop data export {spec} --out FILE.npz",
            )
        data_stored.show_stored(spec, home, format)
        return

    options = load_options(label_column, features_key, label_key, color, image_size)
    ds = load_noting(spec, options)
    result: dict[str, Any] = {
        "name": ds.name,
        "samples": len(ds),
        "sample_shape": list(ds.sample_shape),
        "modality": ds.modality.value,
        "task": ds.task.value,
        "classes": list(ds.classes),
        "class_counts": ds.class_counts(),
        "content_hash": ds.content_hash,
        "source": ds.source,
        "description": ds.description,
        "notes": list(ds.notes),
        "cleaning": None,
    }
    if clean:
        cleaned, report = clean_data(ds)
        result["cleaning"] = {**report.to_dict(), "class_counts": cleaned.class_counts()}

    def render(console: Console) -> None:
        t = Table(title=f"data set {ds.name}", show_header=False)
        t.add_column("figure")
        t.add_column("value")
        for key in ("samples", "modality", "task", "content_hash", "source", "description"):
            t.add_row(key.replace("_", " "), str(result[key]))
        t.add_row("sample shape", "x".join(map(str, ds.sample_shape)))
        console.print(t)
        counts = Table(title="samples per class")
        counts.add_column("class")
        counts.add_column("samples", justify="right")
        for name, n in ds.class_counts().items():
            counts.add_row(name, f"{n:,}")
        console.print(counts)
        if result["cleaning"] is not None:
            c = Table(title="cleaning", show_header=False)
            c.add_column("action")
            c.add_column("count", justify="right")
            for key, value in result["cleaning"].items():
                if key != "class_counts":
                    c.add_row(key.replace("_", " "), str(value))
            console.print(c)

    emit(result, format, render)
