"""``edgeloop optimize`` (one method) and ``edgeloop tune`` (a budgeted search over recipes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edgeloop.cli.output import OutputFormat, emit, err_console, na

Format = Annotated[OutputFormat, typer.Option("--format", help="table or json")]
Data = Annotated[str, typer.Option(help="Data set: bundled name (`edgeloop data list`) or path.")]
Checkpoint = Annotated[
    Path | None,
    typer.Option(help="Torch checkpoint folder (from `edgeloop train --out`) for QAT / pruning."),
]
Seed = Annotated[int, typer.Option(help="Split seed; use the one the model was trained with.")]


def optimize(
    model: Annotated[
        str | None,
        typer.Argument(help="The parent: an ONNX file, or a registry ref NAME[:VERSION]."),
    ] = None,
    method: Annotated[
        str | None, typer.Option(help="Method, e.g. static-int8 (see --list).")
    ] = None,
    data: Annotated[
        str | None,
        typer.Option(help="Data set: bundled name (`edgeloop data list`) or path."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Where to write the variant .onnx.")
    ] = None,
    checkpoint: Checkpoint = None,
    setting: Annotated[
        list[str] | None, typer.Option("--set", help="Method setting KEY=VALUE (repeatable).")
    ] = None,
    seed: Seed = 0,
    runs: Annotated[int, typer.Option(help="Timed runs per benchmark.")] = 300,
    home: Annotated[Path | None, typer.Option(help="edgeloop home for a registry ref.")] = None,
    list_methods: Annotated[
        bool, typer.Option("--list", help="List the methods and whether each runs here, then exit.")
    ] = False,
    format: Format = OutputFormat.TABLE,
) -> None:
    """Apply one optimization method, then benchmark parent and variant on the test split."""
    from edgeloop.bench.measure import benchmark
    from edgeloop.core.errors import ConfigError
    from edgeloop.data import load_data, stratified_split
    from edgeloop.formats.onnx_info import check_samples_fit, inspect_onnx
    from edgeloop.optimize.base import ModelSource, create
    from edgeloop.optimize.recipe import Recipe

    if list_methods:
        _list_methods(format)
        return
    if model is None or method is None or data is None or out is None:
        missing = [n for n, v in (("MODEL", model), ("--method", method), ("--data", data),
                                  ("--out", out)) if v is None]  # fmt: skip
        raise ConfigError(
            f"missing {', '.join(missing)}",
            hint="edgeloop optimize MODEL.onnx --method METHOD --data DATA --out VARIANT.onnx "
            "(`edgeloop optimize --list` shows the methods)",
        )
    step = Recipe.parse(f"{method}({','.join(setting or [])})").steps[0]
    optimizer = create(step.method, **step.params)
    path, parent = _resolve_model(model, home)
    _refuse_overwrite(path, out)
    dataset = load_data(data)
    check_samples_fit(inspect_onnx(path), dataset.sample_shape, data)
    splits = stratified_split(dataset, val=0.15, test=0.15, seed=seed)
    with err_console.status(f"{method}: fitting on {splits.train.name} train"):
        optimizer.fit(splits)
    with err_console.status(f"{method}: writing {out}"):
        stem = path.stem if parent is None else parent.name
        variant = optimizer.apply(ModelSource(path, checkpoint, stem), out)
    split = f"{splits.test.name} test ({len(splits.test)} samples)"
    parent_m, variant_m = (
        benchmark(p, runs=runs, data=splits.test, split_name=split, isolate=True)
        for p in (path, variant.path)
    )
    body: dict[str, Any] = {
        "method": method,
        "parent_ref": None if parent is None else str(parent),
        "output": str(variant.path),
        "parent": parent_m.to_dict(),
        "variant": variant_m.to_dict(),
        "parity": variant.parity.to_dict(),
        "settings": dict(variant.settings),
        "tools": dict(variant.tools),
        "notes": list(variant.notes),
        "extra": dict(variant.extra),
    }

    def render(console: Console) -> None:
        shown = path.name if parent is None else str(parent)
        t = Table(title=f"{method}: {shown} -> {variant.path.name} (measured on {split})")
        for col in ("", "parent", "variant", "ratio"):
            t.add_column(col, justify="right" if col else "left")
        t.add_row(
            "size (bytes)",
            f"{parent_m.size_bytes:,}",
            f"{variant_m.size_bytes:,}",
            ratio_text(parent_m.size_bytes, variant_m.size_bytes, "smaller", "larger"),
        )
        lp, lv = parent_m.latency_ms.p50, variant_m.latency_ms.p50
        t.add_row(
            "latency p50 (ms)", f"{lp:.4f}", f"{lv:.4f}", ratio_text(lp, lv, "faster", "slower")
        )
        t.add_row("accuracy", na(parent_m.accuracy, "{:.2%}"), na(variant_m.accuracy, "{:.2%}"), "")
        top1 = na(variant.parity.top1_agreement, "{:.2%}")
        t.add_row("parity", "", f"max diff {variant.parity.max_abs_diff:.3g}", f"top-1 {top1}")
        console.print(t)
        for note in variant.notes:
            console.print(f"note: {note}")

    emit(body, format, render)


def tune(
    model: Annotated[
        str, typer.Argument(help="The parent: an ONNX file, or a registry ref NAME[:VERSION].")
    ],
    data: Data,
    checkpoint: Checkpoint = None,
    max_latency_ms: Annotated[
        float | None, typer.Option(help="Budget: p50 latency, batch 1.")
    ] = None,
    max_size_kb: Annotated[float | None, typer.Option(help="Budget: model file size.")] = None,
    min_accuracy: Annotated[float | None, typer.Option(help="Budget: accuracy, e.g. 0.97.")] = None,
    max_ram_mb: Annotated[
        float | None, typer.Option(help="Budget: peak RSS while serving.")
    ] = None,
    recipe: Annotated[
        list[str] | None, typer.Option(help="Recipe to try (repeatable); default: a built-in set.")
    ] = None,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for variants and the report.")
    ] = Path("tune-out"),
    register: Annotated[
        str | None, typer.Option(help="Register the chosen variant under this name.")
    ] = None,
    home: Annotated[Path | None, typer.Option(help="edgeloop home for --register.")] = None,
    seed: Seed = 0,
    runs: Annotated[int, typer.Option(help="Timed runs per variant.")] = 300,
    objective: Annotated[
        str,
        typer.Option(
            help="Among variants within budget, minimise latency or size, or "
            "maximise accuracy: latency | size | accuracy."
        ),
    ] = "latency",
    max_accuracy_drop: Annotated[
        float,
        typer.Option(
            help="Without --min-accuracy: allowed drop below the parent's "
            "accuracy measured in this run (0.01 = 1 pp)."
        ),
    ] = 0.01,
    format: Format = OutputFormat.TABLE,
) -> None:
    """Try recipes, measure each in its own process, print the Pareto set and the choice."""
    from edgeloop.optimize.pareto import Budget, Objective
    from edgeloop.optimize.plot import plot_pareto
    from edgeloop.optimize.tune import Candidate
    from edgeloop.optimize.tune import tune as run_tune

    budget = Budget(max_latency_ms, max_size_kb, min_accuracy, max_ram_mb)
    goal = _objective(objective, Objective)
    path, parent = _resolve_model(model, home)

    def progress(c: Candidate) -> None:
        status = f"[red]failed[/] {escape(c.error)}" if c.error else "measured"
        err_console.print(f"[bold cyan]▸[/] {escape(c.recipe)}: {status}")

    result = run_tune(
        path,
        data,
        budget,
        out,
        recipes=recipe,
        checkpoint=checkpoint,
        seed=seed,
        runs=runs,
        objective=goal,
        max_accuracy_drop=max_accuracy_drop,
        on_result=progress,
    )
    points = [p for c in result.tried if (p := c.point) is not None]
    body = result.to_dict()
    if not points:  # nothing measured: no plot, no choice, and the exit code says so
        (out / "tune.json").write_text(json.dumps(body, indent=2))
        raise _all_failed(result.tried, out / "tune.json")
    png = plot_pareto(points, result.pareto, result.chosen, out / "pareto.png")
    body["plot"] = str(png)
    if register and result.chosen is not None:
        body["registered"] = _register(register, result, path, parent, data, seed, home)
    (out / "tune.json").write_text(json.dumps(body, indent=2))

    def render(console: Console) -> None:
        t = Table(title=f"tune {path.name} on {data} — every row measured this run")
        for col in ("recipe", "accuracy", "p50 ms", "engine", "size KB", "pareto", "note"):
            t.add_column(col, justify="left" if col in ("recipe", "note") else "right")
        front = {p.recipe for p in result.pareto}
        for c in result.tried:
            r = c.row or {}
            mark = (
                "★"
                if result.chosen and c.recipe == result.chosen.recipe
                else ("•" if c.recipe in front else "")
            )
            t.add_row(
                c.recipe,
                na(r.get("accuracy"), "{:.2%}"),
                na(r.get("latency_ms"), "{:.4f}"),
                r.get("engine") or "",
                na(None if c.row is None else r["size_bytes"] / 1024, "{:.1f}"),
                mark,
                c.error or "",
            )
        console.print(t)
        if result.chosen is None:
            for row in body["closest"]:
                console.print(f"closest: {row['recipe']} fails {'; '.join(row['fails'])}")
        console.print(f"plot: {png}")

    emit(body, format, render)


def ratio_text(parent: float, variant: float, better: str, worse: str) -> str:
    """How the variant compares, in words that stay true either way round: ``2.00x smaller``
    for half the bytes, ``1.10x larger`` (not ``0.91x smaller``) for 10 % more."""
    if parent <= 0 or variant <= 0:
        return "n/a"
    if variant == parent:
        return "same"
    return (
        f"{parent / variant:.2f}x {better}"
        if variant < parent
        else f"{variant / parent:.2f}x {worse}"
    )


def _all_failed(tried: Any, report: Path) -> Exception:
    """The error for a search where no recipe produced a measured variant."""
    from edgeloop.core.errors import ConversionError

    failures = "; ".join(f"{c.recipe}: {c.error}" for c in tried) or "no recipe was tried"
    return ConversionError(
        f"every recipe failed, nothing was measured ({failures})",
        hint=f"the report is in {report}; fix the first failure above, or pass --recipe with "
        "methods that run here (`edgeloop optimize --list`)",
    )


def _list_methods(format: OutputFormat) -> None:
    """Every built-in method, whether it runs here, and what it does (its docstring)."""
    from edgeloop.optimize.base import BUILTIN_METHODS, known_methods

    here = set(known_methods())
    rows = [
        {"method": name, "available": name in here, "module": module, "what": _summary(name)}
        for name, module in sorted(BUILTIN_METHODS.items())
    ]

    def render(console: Console) -> None:
        t = Table(title="optimization methods (`--method NAME`, `tune --recipe NAME`)")
        for col in ("method", "here", "what"):
            t.add_column(col)
        for row in rows:
            here_text = "yes" if row["available"] else "no: its extra is not installed"
            t.add_row(str(row["method"]), here_text, escape(str(row["what"])))
        console.print(t)

    emit({"methods": rows}, format, render)


def _summary(name: str) -> str:
    """The first line of the registered factory's docstring ('' when not installed here)."""
    from edgeloop.optimize.base import _REGISTRY

    factory = _REGISTRY.get(name)
    doc = (factory.__doc__ or "").strip() if factory is not None else ""
    return doc.splitlines()[0] if doc else ""


def _refuse_overwrite(model: Path, out: Path) -> None:
    """``--out`` must not be the parent: the variant would replace the model it is measured
    against (and a registered parent's bytes would no longer match their hash)."""
    from edgeloop.core.errors import ConfigError

    if out.resolve() == model.resolve():
        raise ConfigError(
            f"--out {str(out)!r} is the parent model itself; the variant would overwrite it",
            hint=f"write the variant elsewhere, e.g. --out {model.with_stem(model.stem + '-opt')}",
        )


def _objective(text: str, enum: Any) -> Any:
    try:
        return enum(text)
    except ValueError as exc:
        from edgeloop.core.errors import ConfigError

        allowed = ", ".join(o.value for o in enum)
        raise ConfigError(f"--objective {text!r} is not one of {allowed}") from exc


def _resolve_model(text: str, home: Path | None) -> tuple[Path, Any]:
    """An ONNX file path as given, or a registry ref resolved to its verified artifact
    (checked out as ``model.onnx`` so every engine opens it); the version's ref or None."""
    from edgeloop.core.errors import ConfigError, NotFoundError
    from edgeloop.core.settings import Settings
    from edgeloop.formats.onnx_info import inspect_onnx
    from edgeloop.registry.resolve import checkout, resolve_model

    settings = Settings.load(home)
    path, version = resolve_model(text, settings)
    if version is None and not path.is_file():
        raise NotFoundError(f"model file {text!r} does not exist", hint="check the path")
    if version is not None:
        if version.manifest.format != "onnx":
            raise ConfigError(
                f"{version.ref} is a {version.manifest.format!r} model; this command takes an "
                "ONNX parent",
                hint="give the ONNX version it was converted from (see `edgeloop registry show`)",
            )
        path = checkout(version, path, settings.home / "checkout")
    inspect_onnx(path)  # a file that is not ONNX is refused here, not deep in an engine
    return path, None if version is None else version.ref


def _register(
    name: str, result: Any, model: Path, parent: Any, data: str, seed: int, home: Path | None
) -> str:
    """Register the chosen variant with its lineage: parent ref, recipe, data hash, split seed."""
    from edgeloop.core.settings import Settings
    from edgeloop.data import load_data, stratified_split
    from edgeloop.optimize.tune import chosen_manifest
    from edgeloop.pipeline.register import register as publish

    dataset = load_data(data)
    manifest = chosen_manifest(
        result,
        name,
        parent=parent,
        parent_file=model,
        dataset=data,
        data_hash=dataset.content_hash,
        seed=seed,
    )
    # The training split (the same seeded split tune measures on) is the drift reference;
    # the model's outputs are profiled on the validation split.
    splits = stratified_split(dataset, val=0.15, test=0.15, seed=seed)
    chosen = Path(result.row(result.chosen.recipe)["output"])
    settings = Settings.load(home).ensure()
    return str(publish(chosen, manifest, settings, reference=splits.train, held_out=splits.val).ref)
