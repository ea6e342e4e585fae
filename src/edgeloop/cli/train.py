"""``edgeloop train``: fit a zoo architecture on a data set and write a torch checkpoint.

torch is imported inside the command (through ``edgeloop.training``) so ``edgeloop --help``
and the light commands never pay for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from edgeloop.cli.data import (
    Color,
    FeaturesKey,
    ImageSize,
    LabelColumn,
    LabelKey,
    load_noting,
    load_options,
)
from edgeloop.cli.output import OutputFormat, emit, err_console, na

if TYPE_CHECKING:
    from edgeloop.data.dataset import Dataset, Splits
    from edgeloop.training.fit import TrainResult


def train(
    data: Annotated[
        str, typer.Option("--data", "-d", help="Bundled data set name (e.g. digits) or a path.")
    ],
    arch: Annotated[
        str | None,
        typer.Option(help="mlp, cnn, ds-cnn, cnn1d or autoencoder; default: picked from the data."),
    ] = None,
    epochs: Annotated[int, typer.Option(help="Most epochs; early stopping may end sooner.")] = 30,
    seed: Annotated[int, typer.Option(help="Seeds the split, the weights and the order.")] = 0,
    out: Annotated[Path, typer.Option("--out", "-o", help="Checkpoint folder to write.")] = Path(
        "model"
    ),
    format: Annotated[OutputFormat, typer.Option(help="table or json (one object on stdout).")] = (
        OutputFormat.TABLE
    ),
    batch_size: Annotated[int, typer.Option(help="Samples per training step.")] = 64,
    lr: Annotated[float, typer.Option(help="Learning rate.")] = 3e-3,
    patience: Annotated[int, typer.Option(help="Epochs without val improvement before stop.")] = 5,
    width: Annotated[int, typer.Option(help="Base channels / hidden units of the net.")] = 32,
    optimizer: Annotated[str, typer.Option(help="adam or sgd.")] = "adam",
    progress: Annotated[bool, typer.Option(help="Show a progress bar on stderr.")] = True,
    clean: Annotated[
        bool,
        typer.Option(
            "--clean",
            help="Clean the data first (duplicates, label conflicts, missing values, outliers; "
            "see `edgeloop data show --clean`).",
        ),
    ] = False,
    label_column: LabelColumn = None,
    features_key: FeaturesKey = None,
    label_key: LabelKey = None,
    color: Color = None,
    image_size: ImageSize = None,
) -> None:
    """Train a model on a stratified 70/15/15 split; report held-out test metrics."""
    from edgeloop.training import ArchConfig, FitConfig, fit, save_checkpoint
    from edgeloop.training.zoo import arch_spec, default_arch

    # Check every flag before the (slower) data load, so a typo fails at once.
    fit_config = FitConfig.from_dict(
        {
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": lr,
            "patience": patience,
            "seed": seed,
            "optimizer": optimizer,
        }
    )
    if arch is not None:
        arch_spec(arch)

    from edgeloop.data import stratified_split

    options = load_options(label_column, features_key, label_key, color, image_size)
    ds = load_noting(data, options)
    if clean:
        ds = _cleaned(ds)
    splits = stratified_split(ds, val=0.15, test=0.15, seed=seed)
    arch_config = ArchConfig(
        arch or default_arch(ds.modality, ds.task), ds.sample_shape, ds.num_classes, width=width
    )
    err_console.print(
        f"training {arch_config.arch} on {ds.name} ({len(splits.train)} train / "
        f"{len(splits.val)} val / {len(splits.test)} test samples)"
    )
    result = fit(arch_config, splits, fit_config, progress=progress)
    save_checkpoint(
        out,
        result.module,
        arch_config,
        fit_config,
        result.test_metrics,
        dataset=ds,
        extra={"data": data_spec(data), "data_options": options.to_dict(), "clean": clean},
    )
    err_console.print(f"checkpoint written to {out}")
    report = _report(data, ds, splits, result, out)
    emit(report, format, lambda console: _render(report, console))


def _cleaned(ds: Dataset) -> Dataset:
    """``ds`` cleaned with the defaults of :func:`edgeloop.data.clean`, saying what changed."""
    from edgeloop.data import clean

    cleaned, report = clean(ds)
    err_console.print(
        f"cleaned {ds.name}: {report.samples_in} -> {report.samples_out} samples "
        f"({report.duplicates_dropped} duplicates, {report.label_conflicts} label conflicts "
        f"dropped; {report.missing_values} missing values imputed; "
        f"{report.clipped_values} values clipped)",
        highlight=False,
    )
    return cleaned


def data_spec(data: str) -> str:
    """``--data`` as a later command can find it again: a bundled name as is, a path absolute."""
    from edgeloop.data.bundled import bundled_names

    return data if data in bundled_names() else str(Path(data).expanduser().resolve())


def _report(
    data: str, ds: Dataset, splits: Splits, result: TrainResult, out: Path
) -> dict[str, Any]:
    """The JSON object of the command: ``summary()``'s flat figures plus the full records."""
    return {
        **result.summary(),
        "data": data,
        "dataset": {
            "name": ds.name,
            "content_hash": ds.content_hash,
            "samples": len(ds),
            "classes": list(ds.classes),
            "task": ds.task.value,
            "split": {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test)},
            "split_seed": splits.seed,
        },
        "arch": result.arch.to_dict(),
        "fit": result.config.to_dict(),
        "test": result.test_metrics.to_dict(),
        "checkpoint": str(out),
        "history": [r.to_dict() for r in result.history],
    }


def _render(report: dict[str, Any], console: Console) -> None:
    test = report["test"]
    # An anomaly model's accuracy needs a threshold; say so briefly, the JSON has the full note.
    reason = "n/a (no threshold)" if test["task"] == "anomaly" else "n/a"
    table = Table(title=f"trained {report['arch']['arch']} on {report['dataset']['name']}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    split = report["dataset"]["split"]
    rows = [
        ("samples train / val / test", f"{split['train']} / {split['val']} / {split['test']}"),
        ("parameters", str(report["parameters"])),
        ("epochs run (best)", f"{report['epochs_run']} ({report['best_epoch']})"),
        ("stopped early", "yes" if report["stopped_early"] else "no"),
        ("test accuracy", na(test["accuracy"], "{:.4f}", reason)),
        ("test macro-F1", na(test["macro_f1"], "{:.4f}", reason)),
        ("test ROC-AUC", na(test["roc_auc"], "{:.4f}", reason)),
        ("train seconds", f"{report['train_seconds']:.1f} ({report['threads']} threads)"),
        ("checkpoint", report["checkpoint"]),
    ]
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
