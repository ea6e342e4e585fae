"""``edgeloop export``: a trained checkpoint -> one ONNX file, checked against torch."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from edgeloop.cli.output import OutputFormat, emit, err_console

if TYPE_CHECKING:
    from edgeloop.data import LoadOptions


def export(
    checkpoint: Annotated[
        Path,
        typer.Argument(
            help="Checkpoint folder written by `edgeloop train` (model.pt + model.json)."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the .onnx file.")],
    data: Annotated[
        str | None,
        typer.Option(
            help="Data the parity check runs on: a bundled name or a path "
            "(default: the data the checkpoint was trained on, as `edgeloop train` recorded it)."
        ),
    ] = None,
    samples: Annotated[
        int, typer.Option(help="How many held-out samples the parity check uses.")
    ] = 512,
    opset: Annotated[int, typer.Option(help="ONNX opset (17-21).")] = 18,
    tolerance: Annotated[
        float, typer.Option(help="Largest allowed |torch - onnx| output diff.")
    ] = 1e-4,
    seed: Annotated[int, typer.Option(help="Split seed; use the one you trained with.")] = 0,
    format: Annotated[
        OutputFormat, typer.Option("--format", help="table or json")
    ] = OutputFormat.TABLE,
) -> None:
    """Export to ONNX (named tensors, free batch axis), then compare with torch on test data."""
    from edgeloop.core.errors import ConfigError
    from edgeloop.core.types import shape_str
    from edgeloop.data import load_data, stratified_split
    from edgeloop.formats.onnx_export import export_checked

    # load_module reads plain checkpoints and pruned ones (whose layer widths differ from the
    # arch config and are recorded beside the weights).
    from edgeloop.optimize.pruned_checkpoint import load_module
    from edgeloop.training.zoo import deployable

    trained, arch = load_module(checkpoint)
    # What gets served: class probabilities for classifiers, a score for the autoencoder.
    module = deployable(trained, arch)
    spec, options = (data, None) if data is not None else _trained_on(checkpoint)
    dataset = load_data(spec, options)
    if dataset.sample_shape != tuple(arch.input_shape):
        raise ConfigError(
            f"data set {dataset.name!r} has samples of shape {shape_str(dataset.sample_shape)}, "
            f"but the checkpoint {str(checkpoint)!r} takes {shape_str(arch.input_shape)}",
            hint="pass --data with the data the model was trained on",
        )
    splits = stratified_split(dataset, val=0.15, test=0.15, seed=seed)
    x = splits.test.x[:samples]
    with err_console.status(f"exporting {checkpoint} -> {out}"):
        result = export_checked(
            module, x, out, split=f"{splits.test.name} test", tolerance=tolerance, opset=opset
        )

    def render(console: Console) -> None:
        t = Table(title=f"exported {result.info.path}")
        t.add_column("figure")
        t.add_column("value", justify="right")
        p = result.parity
        t.add_row("size", f"{result.info.size_bytes:,} bytes")
        t.add_row("opset", str(result.info.opset))
        t.add_row("max |torch - onnx|", f"{p.max_abs_diff:.3g}")
        top1 = "n/a (not a classifier)" if p.top1_agreement is None else f"{p.top1_agreement:.2%}"
        t.add_row("top-1 agreement", top1)
        t.add_row("samples", f"{p.samples} ({p.split})")
        console.print(t)

    emit(result.to_dict(), format, render)


def _trained_on(checkpoint: Path) -> tuple[str, LoadOptions]:
    """The data ``edgeloop train`` recorded in the checkpoint (with the options it was read
    with), or its bundled set's name.

    Raises:
        ConfigError: the checkpoint names no data this command can load again.
    """
    from edgeloop.core.errors import ConfigError
    from edgeloop.data import LoadOptions
    from edgeloop.data.bundled import bundled_names
    from edgeloop.training.checkpoint import read_checkpoint, recorded_data

    recorded = recorded_data(checkpoint)
    if recorded is not None:
        return recorded.spec, LoadOptions.from_dict(recorded.options)
    name = read_checkpoint(checkpoint).dataset
    if name in bundled_names():
        return str(name), LoadOptions()
    raise ConfigError(
        f"checkpoint {str(checkpoint)!r} does not record where its training data is "
        f"(data set name: {name or 'none'})",
        hint="pass --data with the data the model was trained on",
    )
