"""``edgeloop quickstart``: the loop end to end on a bundled data set, with a report."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from edgeloop.cli.output import OutputFormat, emit, err_console, na
from edgeloop.pipeline.federated_stage_report import federated_rows
from edgeloop.pipeline.retrain_stage_report import retrain_rows


def quickstart(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for report.json, report.html, plots.")
    ] = Path("quickstart-out"),
    home: Annotated[
        Path | None,
        typer.Option(help="edgeloop home (registry); default $EDGELOOP_HOME or ~/.edgeloop."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for the split and training.")] = 0,
    epochs: Annotated[
        int, typer.Option(help="Most training epochs (early stopping may end sooner).")
    ] = 60,
    fleet: Annotated[
        bool,
        typer.Option(
            "--fleet/--no-fleet",
            help="Roll the chosen variant out to a local fleet of 3 agent processes.",
        ),
    ] = True,
    monitor: Annotated[
        bool,
        typer.Option(
            "--monitor/--no-monitor",
            help="Stream the held-out split through one fleet node with a shift injected.",
        ),
    ] = True,
    federated: Annotated[
        bool,
        typer.Option(
            "--federated/--no-federated",
            help="5 FedAvg rounds across the fleet's agents, each on its share of the data.",
        ),
    ] = True,
    retrain: Annotated[
        bool,
        typer.Option(
            "--retrain/--no-retrain",
            help="Capture the shifted field, make a data set, retrain, roll the challenger out.",
        ),
    ] = True,
    format: Annotated[
        OutputFormat, typer.Option("--format", help="table or json")
    ] = OutputFormat.TABLE,
) -> None:
    """Load digits, clean, split, train a CNN, export to ONNX, check parity, benchmark, register."""
    from edgeloop.core.settings import Settings
    from edgeloop.pipeline.quickstart import QuickstartConfig, run_quickstart
    from edgeloop.pipeline.report import write_report

    settings = Settings.load(home).ensure()
    started = time.perf_counter()
    result = run_quickstart(
        out,
        settings,
        QuickstartConfig(
            seed=seed,
            epochs=epochs,
            fleet=fleet,
            monitor=monitor,
            federated=federated,
            retrain=retrain,
        ),
        progress=format is OutputFormat.TABLE,
        on_stage=lambda s: err_console.print(f"[bold cyan]▸[/] {s}"),
    )
    paths = write_report(result, out)
    total = time.perf_counter() - started
    body = result.to_dict()
    body["total_seconds"] = round(total, 2)
    body["files"] = {k: str(v) for k, v in paths.items()}

    def render(console: Console) -> None:
        console.print(_figures_table(body, total))
        console.print(_variants_table(body))
        console.print(f"report: {paths['html']}  json: {paths['json']}")

    emit(body, format, render)


def _figures_table(body: dict[str, Any], total: float) -> Table:
    """One row per headline figure, stage by stage, from the report's blocks."""
    t = Table(
        title=f"edgeloop quickstart — {body['dataset']['name']} ({total:.0f} s, all measured)"
    )
    t.add_column("stage")
    t.add_column("figure")
    t.add_column("value", justify="right")
    _data_rows(t, body)
    _model_rows(t, body)
    _convert_rows(t, body["convert"])
    _serve_rows(t, body["serve"])
    _fleet_rows(t, body["fleet"])
    _monitor_rows(t, body.get("monitor"))
    for figure, value in retrain_rows(body.get("retrain")):
        t.add_row("retrain", figure, value)
    for figure, value in federated_rows(body.get("federated")):
        t.add_row("federated", figure, value)
    for stage, reason in body["skipped"].items():
        if stage not in ("convert", "serve", "fleet", "monitor", "federated", "retrain"):
            t.add_row(stage, "skipped", reason)
    return t


def _data_rows(t: Table, body: dict[str, Any]) -> None:
    ds, c = body["dataset"], body["clean"]
    t.add_row("data", "samples train/val/test", "/".join(str(v) for v in ds["split"].values()))
    t.add_row("data", "content hash", ds["hash"][:12])
    t.add_row(
        "clean",
        "imputed / clipped / duplicates dropped",
        f"{c['missing_values']} / {c['clipped_values']} / {c['duplicates_dropped']}",
    )


def _model_rows(t: Table, body: dict[str, Any]) -> None:
    """Train, export, bench, register, optimize: the model's own figures."""
    tr, ex = body["train"], body["export"]
    t.add_row("train", "test accuracy", f"{tr['test_accuracy']:.2%}")
    t.add_row("train", "test macro-F1", na(tr.get("test_macro_f1"), "{:.4f}"))
    t.add_row("train", "epochs (best)", f"{tr['epochs_run']} ({tr['best_epoch']})")
    t.add_row("export", "max |torch - onnx|", f"{ex['max_abs_diff']:.2g}")
    t.add_row("export", "top-1 agreement", na(ex.get("top1_agreement"), "{:.2%}"))
    for m in body["bench"]:
        lat, b = m["latency_ms"], m["batch_size"]
        t.add_row("bench", f"batch {b} latency p50/p99", f"{lat['p50']:.3f} / {lat['p99']:.3f} ms")
        t.add_row("bench", f"batch {b} throughput", f"{m['throughput_per_s']:,.0f} /s")
    m1 = body["bench"][0]
    t.add_row("bench", "size", f"{m1['size_bytes']:,} bytes")
    t.add_row("bench", "peak RSS (bench process)", na(m1["peak_rss_mb"], "{:.1f} MB"))
    # The full reason is in the JSON report; the table keeps its first clause.
    reason = m1["power_source"].split(":")[0]
    t.add_row("bench", "power", na(m1["power_w"], "{:.2f} W", f"n/a ({reason})"))
    t.add_row("register", "model", body["registry"]["ref"])
    t.add_row("optimize", "edge variant registered", body["registry"]["edge_ref"] or "none fits")


def _serve_rows(t: Table, sv: dict[str, Any]) -> None:
    """The serve stage: the server's footprint, then each model under load over HTTP."""
    if "skipped" in sv:
        t.add_row("serve", "skipped", sv["skipped"])
        return
    t.add_row(
        "serve",
        "server idle RSS / torch imported",
        f"{na(sv['idle_rss_mb'], '{:.0f} MB')} / {sv['torch_imported']}",
    )
    for name, load in sv["models"].items():
        lat = load["latency_ms"]
        t.add_row(
            "serve",
            f"{name}: {load['concurrency']} clients, OIP v2 JSON",
            f"{load['throughput_per_s']:,.0f} req/s, p50 {na(lat['p50'], '{:.2f}')} / "
            f"p99 {na(lat['p99'], '{:.2f}')} ms, {load['errors']} errors, "
            f"accuracy {na(load['served_accuracy'], '{:.2%}')}",
        )


def _convert_rows(t: Table, conversion: dict[str, Any]) -> None:
    """The convert stage: each target produced, how it was checked, or why it is missing."""
    if isinstance(conversion.get("skipped"), str):  # the whole stage did not run
        t.add_row("convert", "skipped", conversion["skipped"])
        return
    if conversion.get("error"):
        t.add_row("convert", "failed", conversion["error"])
    for row in conversion["targets"]:
        parity = row["parity"] or {}
        checked = (
            f"top-1 {parity['top1_agreement']:.2%}, accuracy {row['accuracy']:.2%}"
            if parity.get("top1_agreement") is not None and row["accuracy"] is not None
            else row["not_run"] or ""
        )
        t.add_row("convert", f"{row['target']} ({row['size_bytes']:,} bytes)", checked)
    for target, reason in conversion["skipped"].items():
        t.add_row("convert", f"{target}: not produced", reason)


def _variants_table(body: dict[str, Any]) -> Table:
    """The optimization search: every variant measured on the test split, the choice starred."""
    chosen = (body.get("chosen") or {}).get("recipe")
    front = {row["recipe"] for row in body["pareto"]}
    tune = body["tune"]
    t = Table(title=f"variants (objective: {tune['objective']}; {tune['budget_note']})")
    for col in ("recipe", "accuracy", "p50 ms", "size KB", ""):
        t.add_column(col, justify="left" if col == "recipe" else "right")
    for row in body["variants"]:
        mark = (
            "★ chosen" if row["recipe"] == chosen else ("pareto" if row["recipe"] in front else "")
        )
        size = None if row.get("size_bytes") is None else row["size_bytes"] / 1024
        t.add_row(
            row["recipe"],
            na(row.get("accuracy"), "{:.2%}"),
            na(row.get("latency_ms"), "{:.4f}"),
            na(size, "{:.1f}"),
            mark or (row.get("error") or ""),
        )
    return t


def _fleet_rows(t: Table, fleet: dict[str, Any]) -> None:
    """The fleet stage: the staged rollout, each node's served accuracy, the broken v2 caught."""
    if "skipped" in fleet:
        t.add_row("fleet", "skipped", fleet["skipped"])
        return
    ro, bad = fleet["rollout"], fleet["broken_v2"]
    waves = " then ".join("+".join(w) for w in ro["waves"])
    t.add_row("fleet", f"rollout {ro['ref']} ({waves})", f"{ro['state']} in {ro['seconds']} s")
    for node in fleet["nodes"]:
        served = node["served_v1"]
        t.add_row(
            "fleet",
            f"{node['name']}: {served['requests']} test samples over HTTP",
            f"accuracy {served['accuracy']:.2%}, p50 {served['latency_ms']['p50']:.2f} ms",
        )
    on_v1 = sum(1 for n in fleet["nodes"] if n["on_v1"])
    t.add_row(
        "fleet",
        f"broken {bad['ref']}: reached {', '.join(bad['reached']) or 'none'}",
        f"{bad['state']} in {bad['seconds']} s; {on_v1}/{len(fleet['nodes'])} nodes on v1",
    )


def _monitor_rows(t: Table, mon: dict[str, Any] | None) -> None:
    """The monitor stage: the alarm's delay, its event on the control plane, the accuracies."""
    if not mon:
        return
    if "skipped" in mon:
        t.add_row("monitor", "skipped", mon["skipped"])
        return
    st, alarm, acc = mon["stream"], mon["alarm"], mon["accuracy"]
    node = f"{mon['node']['name']}: {st['samples']} samples, shift at {st['shift_at']}"
    t.add_row("monitor", node, st["shift"]["name"])
    if alarm["delay_samples"] is None:
        t.add_row("monitor", "drift alarm", alarm["reason"])
    else:
        t.add_row(
            "monitor", f"{alarm['kind']} drift alarm", f"{alarm['delay_samples']} samples after"
        )
        t.add_row("monitor", "event on the control plane", alarm["received_at_control"])
    t.add_row("monitor", "drift alarms before the shift", str(mon["false_alarms_before_shift"]))
    for when in ("before_shift", "after_shift"):
        a = acc[when]
        t.add_row(
            "monitor",
            f"accuracy {when.replace('_', ' ')}: true (labels) / estimated",
            f"{na(a['true'], '{:.1%}')} / {na(a['estimated'], '{:.1%}')}",
        )
