"""``edgeloop convert MODEL --to TARGET`` (or ``--for DEVICE``): edge targets, verified, timed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from edgeloop.cli.output import OutputFormat, emit, err_console, na

Format = Annotated[OutputFormat, typer.Option("--format", help="table or json")]


def convert(
    model: Annotated[
        str | None,
        typer.Argument(help="The parent: an ONNX file, or a registry ref NAME[:VERSION]."),
    ] = None,
    to: Annotated[
        list[str] | None,
        typer.Option("--to", help="Target (repeatable), or `all`; see --list."),
    ] = None,
    device: Annotated[
        str | None,
        typer.Option("--for", help="Device profile: pick its target and check the model fits."),
    ] = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option(help="The parent's torch checkpoint (tflite, coreml, tensorrt start here)."),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option(
            help="Data for calibration and verification, shaped like the model's input "
            "(default: digits, which fits models trained on it)."
        ),
    ] = None,
    seed: Annotated[
        int, typer.Option(help="Split seed; use the one the model was trained with.")
    ] = 0,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the outputs.")] = Path(
        "convert-out"
    ),
    register: Annotated[
        str | None, typer.Option(help="Register each output as NAME-TARGET with lineage.")
    ] = None,
    home: Annotated[Path | None, typer.Option(help="edgeloop home for the registry.")] = None,
    runs: Annotated[int, typer.Option(help="Timed runs per output that runs here.")] = 200,
    list_targets: Annotated[
        bool, typer.Option("--list", help="List targets and device profiles, then exit.")
    ] = False,
    format: Format = OutputFormat.TABLE,
) -> None:
    """Convert a model to edge targets; run each where it can run and compare with the parent."""
    from edgeloop.core.errors import ConfigError
    from edgeloop.core.settings import Settings
    from edgeloop.formats.convert import exporters, for_device, plan, why_not
    from edgeloop.formats.devices import device as device_profile
    from edgeloop.pipeline.convert import load_source, run_conversion
    from edgeloop.pipeline.convert_publish import register_results

    if list_targets:
        _list(format)
        return
    if model is None:
        raise ConfigError("no model given", hint="edgeloop convert MODEL --to TARGET")
    profile = device_profile(device) if device else None
    names = list(to or [])
    skipped: dict[str, str] = {}
    parent_file = Path(model) if Path(model).is_file() else None
    if "all" in names:  # every target this machine can make; the others named with the reason
        for e in exporters():
            reason = why_not(e.name, has_module=checkpoint is not None, onnx=parent_file)
            if reason is None:
                names.append(e.name)
            else:
                skipped[e.name] = reason
                err_console.print(f"skipping {e.name}: {escape(reason)}", highlight=False)
        names = [n for n in names if n != "all"]
    if profile is not None and not names:  # the device's preferred target that can be made
        names, passed = for_device(
            profile.targets, has_module=checkpoint is not None, onnx=parent_file
        )
        for target, reason in passed.items():
            skipped[target] = reason
            err_console.print(f"skipping {target}: {escape(reason)}", highlight=False)
    if not names and skipped:
        raise ConfigError(
            "no target can be made here: "
            + "; ".join(f"{name}: {reason}" for name, reason in skipped.items()),
            hint="install a converter named above, or pass --checkpoint DIR",
        )
    if not names:
        raise ConfigError(
            "no target given",
            hint="use --to TARGET (see `edgeloop convert --list`) or --for DEVICE",
        )
    plan(names)  # an unknown target fails here, before any data is loaded
    from edgeloop.cli.optimize import _resolve_model

    path, parent = _resolve_model(model, home)
    name = parent.name if parent is not None else path.stem
    source = load_source(path, data or "digits", seed, checkpoint, name=register or name)
    _check_data(path, source.x_check.shape[1:], data)
    with Progress(
        TextColumn("[bold cyan]convert[/] {task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as bar:
        task = bar.add_task("starting", total=None)

        def step(target: str) -> None:
            bar.update(task, description=target, advance=1)

        report = run_conversion(source, names, out, runs=runs, device=profile, on_target=step)
    body = report.to_dict()
    body["skipped"] = skipped
    if register:
        parent_ref, refs = register_results(report, register, parent, Settings.load(home).ensure())
        body["parent_ref"] = str(parent_ref)
        for row in body["targets"]:
            row["registered"] = refs.get(row["target"])
    emit(body, format, lambda console: _render(console, body))


def _check_data(path: Path, sample_shape: tuple[int, ...], data: str | None) -> None:
    """Refuse data the parent cannot take before any converter runs on it."""
    from edgeloop.formats.onnx_info import check_samples_fit, inspect_onnx

    name = data if data is not None else "digits (the default --data)"
    check_samples_fit(inspect_onnx(path), tuple(sample_shape), name)


def _render(console: Console, body: dict[str, Any]) -> None:
    parent = body["parent"]
    t = Table(title=f"convert {Path(body['model']).name}: every figure measured on {body['split']}")
    for col in (
        "target",
        "size KB",
        "max |diff|",
        "top-1",
        "accuracy",
        "p50 ms",
        "ran on / not run",
    ):
        t.add_column(col, justify="left" if col in ("target", "ran on / not run") else "right")
    t.add_row("parent (onnx)", "", "", "", "", f"{parent['latency_ms']['p50']:.4f}", "onnxruntime")
    for row in body["targets"]:
        parity = row["parity"] or {}
        bench = row["bench"]
        p50 = " / ".join(f"{b['latency_ms']['p50']:.4f}" for b in bench) if bench else "n/a"
        t.add_row(
            row["target"],
            f"{row['size_bytes'] / 1024:.1f}",
            na(parity.get("max_abs_diff"), "{:.3g}"),
            na(parity.get("top1_agreement"), "{:.2%}"),
            na(row["accuracy"], "{:.2%}"),
            p50,
            row["ran_on"].split(" (")[0] if row["ran_on"] else "not run",
        )
    console.print(t)
    for row in body["targets"]:
        if row["not_run"]:
            console.print(f"{row['target']}: {escape(row['not_run'])}", highlight=False)
        for note in row["notes"]:
            console.print(f"{row['target']}: {escape(note)}", highlight=False)
        if row["target"] == "tflm":
            d = row["details"]
            console.print(
                f"tflm: {d['symbol']} flash {d['flash_bytes']:,} B, arena {d['arena_bytes']:,} B "
                f"(measured); TFLM vs LiteRT top-1 {d['tflm_vs_litert']['top1_agreement']:.2%}"
            )
        if row.get("registered"):
            console.print(f"{row['target']}: registered as {row['registered']}")
    for target, reason in body.get("skipped", {}).items():
        console.print(f"{target}: skipped, {escape(reason)}", highlight=False)
    if body["device"]:
        console.print(body["device"]["summary"])


def _list(format: OutputFormat) -> None:
    from edgeloop.formats.convert import exporters
    from edgeloop.formats.devices import PROFILES

    body = {
        "targets": [
            {"name": e.name, "format": e.format, "extra": e.extra, "description": e.description}
            for e in exporters()
        ],
        "devices": [p.to_dict() for p in PROFILES],
    }

    def render(console: Console) -> None:
        t = Table(title="conversion targets")
        for col in ("target", "format", "extra", "what"):
            t.add_column(col)
        for e in body["targets"]:
            t.add_row(e["name"], e["format"], e["extra"], e["description"])
        console.print(t)
        d = Table(title="device profiles (vendor-published specs, used for fit checks only)")
        for col in ("device", "RAM", "flash", "targets", "source"):
            d.add_column(col)
        for p in PROFILES:
            d.add_row(
                p.name,
                f"{p.ram_bytes // 1024:,} KB",
                f"{p.flash_bytes // 1024:,} KB",
                ", ".join(p.targets),
                p.source,
            )
        console.print(d)

    emit(body, format, render)
