"""Write a quickstart result as files: ``report.json``, PNG plots and a self-contained HTML page."""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgeloop.core.files import write_atomic
from edgeloop.pipeline.federated_stage_report import federated_html
from edgeloop.pipeline.monitor_report import monitor_html
from edgeloop.pipeline.quickstart import QuickstartResult
from edgeloop.pipeline.retrain_stage_report import retrain_html


def write_report(result: QuickstartResult, out_dir: Path) -> dict[str, Path]:
    """Write every report file into ``out_dir``; return their paths by kind.

    The JSON is ``result.to_dict()`` plus ``files``; the page and plots are drawn from it.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out_dir / "report.json",
        "training_curve": out_dir / "training_curve.png",
        "latency": out_dir / "latency.png",
        "pareto": out_dir / "pareto.png",
        "html": out_dir / "report.html",
    }
    body = result.to_dict()
    body["files"] = {k: str(v) for k, v in paths.items()}
    write_atomic(paths["json"], json.dumps(body, indent=2).encode())
    train = body["train"]
    metric = (
        "validation ROC-AUC" if train.get("test_roc_auc") is not None else "validation accuracy"
    )
    plot_training_curve(
        body["history"], paths["training_curve"], best_epoch=train["best_epoch"], metric=metric
    )
    plot_latency(body["bench"], paths["latency"])
    write_atomic(paths["html"], render_html(body, paths).encode())
    return paths


def plot_training_curve(
    history: Sequence[dict[str, float]],
    path: Path,
    *,
    best_epoch: int | None = None,
    metric: str = "validation accuracy",
) -> None:
    """Loss (train, val) and the validation metric per epoch; the restored best epoch marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=110)
    ax_loss.plot(epochs, [h["train_loss"] for h in history], label="train loss")
    ax_loss.plot(epochs, [h["val_loss"] for h in history], label="validation loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_yscale("log")
    ax_loss.legend()
    # A metric can be undefined for an epoch (ROC-AUC of a one-class split): leave a gap.
    values = [float("nan") if h.get("val_metric") is None else h["val_metric"] for h in history]
    ax_metric.plot(epochs, values, color="tab:green")
    ax_metric.set_xlabel("epoch")
    ax_metric.set_ylabel(metric)
    if best_epoch is not None:
        for ax in (ax_loss, ax_metric):
            ax.axvline(best_epoch, color="grey", linestyle="--", linewidth=1)
        ax_metric.annotate(
            f"best epoch {best_epoch} (weights kept)",
            (best_epoch, 0.02),
            xycoords=("data", "axes fraction"),
            fontsize=8,
            color="grey",
        )
    ax_metric.grid(alpha=0.3)
    fig.suptitle("training curve (measured this run)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_latency(bench: list[dict[str, Any]], path: Path) -> None:
    """p50 / p90 / p99 latency per batch size as grouped bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.4), dpi=110)
    width = 0.25
    for i, q in enumerate(("p50", "p90", "p99")):
        xs = [j + (i - 1) * width for j in range(len(bench))]
        ax.bar(xs, [b["latency_ms"][q] for b in bench], width, label=q)
    ax.set_xticks(range(len(bench)), [f"batch {b['batch_size']}" for b in bench])
    ax.set_ylabel("latency per batch (ms)")
    ax.set_title(f"ONNX Runtime on {bench[0]['cpu']}" if bench else "latency", fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def render_html(body: dict[str, Any], paths: dict[str, Path]) -> str:
    """One HTML page with the figures and the plots inlined (it opens without the PNG files)."""

    def img(kind: str) -> str:
        data = base64.b64encode(paths[kind].read_bytes()).decode()
        return f'<img alt="{kind}" src="data:image/png;base64,{data}">'

    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row.values()) + "</tr>"
        for row in body["variants"]
    )
    head = (
        "".join(f"<th>{html.escape(k)}</th>" for k in body["variants"][0])
        if body["variants"]
        else ""
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>edgeloop quickstart report</title>
<style>body{{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}
pre{{background:#f6f6f6;padding:1em;overflow:auto}}</style></head><body>
<h1>edgeloop quickstart</h1>
<p>Stages that ran: {html.escape(" → ".join(body["stages"]))}. Every figure below was measured in
this run on <b>{html.escape(str(body["dataset"]["name"]))}</b>
({html.escape(str(body["dataset"]["source"]))}).</p>
<h2>Variants (optimization search)</h2><table><tr>{head}</tr>{rows}</table>
<p>Chosen: <b>{html.escape(_fmt((body.get("chosen") or {}).get("recipe")))}</b>
({html.escape(str(body.get("tune", {}).get("budget_note") or ""))})</p>
{img("pareto")}
{_conversion_html(body.get("convert"))}
{_fleet_html(body.get("fleet"))}
{monitor_html(body.get("monitor"))}
{retrain_html(body.get("retrain"))}
{federated_html(body.get("federated"))}
{_skipped_html(body.get("skipped") or {})}
<h2>Training</h2>{img("training_curve")}
<h2>Latency</h2>{img("latency")}
<h2>Full report</h2><pre>{html.escape(json.dumps(body, indent=2))}</pre>
</body></html>
"""


def _conversion_html(conversion: dict[str, Any] | None) -> str:
    """The targets the convert stage produced, with their checks (or why one is missing)."""
    if not conversion:
        return ""
    if isinstance(conversion.get("skipped"), str):  # the whole stage did not run
        return (
            f"<h2>Edge targets (convert)</h2><p>skipped: {html.escape(conversion['skipped'])}</p>"
        )
    rows = "".join(
        f"<tr><td>{html.escape(r['target'])}</td><td>{r['size_bytes']:,}</td>"
        f"<td>{html.escape(_fmt((r['parity'] or {}).get('max_abs_diff')))}</td>"
        f"<td>{html.escape(_fmt(r['accuracy']))}</td>"
        f"<td>{html.escape(r['ran_on'] or r['not_run'] or '')}</td></tr>"
        for r in conversion["targets"]
    )
    missing = "".join(
        f"<li>{html.escape(t)}: {html.escape(why)}</li>" for t, why in conversion["skipped"].items()
    )
    return (
        "<h2>Edge targets (convert)</h2><table><tr><th>target</th><th>bytes</th>"
        f"<th>max abs diff</th><th>accuracy</th><th>ran on</th></tr>{rows}</table>"
        + (f"<ul>{missing}</ul>" if missing else "")
    )


def _fleet_html(fleet: dict[str, Any] | None) -> str:
    """The fleet stage: the staged rollout, what each node served, the broken v2 caught."""
    if not fleet:
        return ""
    if "skipped" in fleet:
        return f"<h2>Fleet</h2><p>skipped: {html.escape(fleet['skipped'])}</p>"
    ro, bad = fleet["rollout"], fleet["broken_v2"]
    rows = "".join(
        f"<tr><td>{html.escape(n['name'])}</td><td>{n['served_v1']['requests']}</td>"
        f"<td>{n['served_v1']['accuracy']:.2%}</td>"
        f"<td>{n['served_v1']['latency_ms']['p50']:.2f}</td>"
        f"<td>{'yes' if n['on_v1'] else 'NO'}</td></tr>"
        for n in fleet["nodes"]
    )
    waves = " then ".join(" + ".join(w) for w in ro["waves"])
    return (
        f"<h2>Fleet (3 agent processes)</h2><p>Rollout of <b>{html.escape(ro['ref'])}</b> in "
        f"waves {html.escape(waves)}: {html.escape(ro['state'])} in {ro['seconds']} s. "
        f"Broken <b>{html.escape(bad['ref'])}</b> reached {html.escape(', '.join(bad['reached']))}"
        f" only: {html.escape(bad['state'])} in {bad['seconds']} s.</p>"
        "<table><tr><th>node</th><th>requests</th><th>served accuracy</th><th>p50 ms</th>"
        f"<th>on v1 after broken v2</th></tr>{rows}</table>"
    )


def _skipped_html(skipped: dict[str, str]) -> str:
    """Every stage that did not run, with the reason."""
    if not skipped:
        return ""
    items = "".join(
        f"<li>{html.escape(stage)}: {html.escape(why)}</li>" for stage, why in skipped.items()
    )
    return f"<h2>Stages skipped</h2><ul>{items}</ul>"


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
