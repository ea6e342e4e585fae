"""The monitor stage drawn: the drift score over the stream (PNG) and the report's section."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

KIND_COLOURS = {"input": "tab:blue", "prediction": "tab:orange", "confidence": "tab:purple"}


def plot_monitor(
    trace: dict[str, list[float | None]],
    shift_at: int,
    alarm_at: int | None,
    path: Path,
    *,
    title: str,
) -> None:
    """Top: each drift kind's score over its threshold per sample (1 = the line). Bottom: the
    windowed true accuracy (from the posted labels) and the estimated one (ATC)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 5.2), dpi=110, sharex=True)
    x = trace["sample"]
    for kind, colour in KIND_COLOURS.items():
        top.plot(x, _nan(trace[kind]), color=colour, linewidth=1, label=f"{kind} drift score")
    top.axhline(1.0, color="red", linewidth=1, linestyle=":", label="threshold")
    top.set_ylabel("score / threshold")
    top.set_yscale("log")
    bottom.plot(x, _nan(trace["accuracy"]), color="tab:green", label="true accuracy (labels)")
    bottom.plot(x, _nan(trace["estimated"]), color="tab:grey", label="estimated accuracy (ATC)")
    bottom.set_ylabel("windowed accuracy")
    bottom.set_xlabel("sample of the stream")
    bottom.set_ylim(0, 1.02)
    for ax in (top, bottom):
        ax.axvline(shift_at, color="black", linewidth=1, linestyle="--")
        if alarm_at is not None:
            ax.axvline(alarm_at, color="red", linewidth=1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    said = "no alarm" if alarm_at is None else f"alarm at {alarm_at} (red)"
    top.set_title(f"{title}: shift at {shift_at} (dashed), {said}; read from the node", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _nan(values: Sequence[float | None]) -> list[float]:
    return [float("nan") if v is None else float(v) for v in values]


def monitor_html(block: dict[str, Any] | None) -> str:
    """The report page's monitor section: figures, the fleet table, the plot (inlined, and
    linked to its file in the out folder)."""
    if not block:
        return ""
    if "skipped" in block:
        return f"<h2>Monitor</h2><p>skipped: {html.escape(block['skipped'])}</p>"
    alarm, acc, st = block["alarm"], block["accuracy"], block["stream"]
    rows = [
        ("node", f"{block['node']['name']} ({block['model']}:{block['version']})"),
        ("stream", f"{st['samples']} samples, shift at {st['shift_at']}: {st['shift']['name']}"),
        ("alarm delay", _alarm_text(alarm)),
        ("event on the control plane", _event_text(alarm)),
        ("drift alarms before the shift", _before_text(block)),
        ("accuracy before the shift (true / estimated)", _acc_text(acc["before_shift"])),
        ("accuracy after the shift (true / estimated)", _acc_text(acc["after_shift"])),
        ("labels", block["labels_note"]),
    ]
    cells = "".join(
        f"<tr><td>{html.escape(k)}</td><td style='text-align:left'>{html.escape(v)}</td></tr>"
        for k, v in rows
    )
    plot = Path(block["plot"])
    data = base64.b64encode(plot.read_bytes()).decode() if plot.is_file() else ""
    return (
        "<h2>Monitor (drift on a node, shift injected)</h2>"
        f"<table>{cells}</table>"
        f'<p><a href="{html.escape(plot.name)}">{html.escape(plot.name)}</a></p>'
        f'<a href="{html.escape(plot.name)}"><img alt="monitor" '
        f'src="data:image/png;base64,{data}"></a>'
        f"<p>{html.escape(block['fleet_monitor']['command'])}</p>"
        f"<pre>{html.escape(block['fleet_monitor']['table'])}</pre>"
    )


def _alarm_text(alarm: dict[str, Any]) -> str:
    if alarm["delay_samples"] is None:
        return str(alarm.get("reason"))
    return (
        f"{alarm['delay_samples']} samples after the shift ({alarm['kind']} drift, score "
        f"{alarm['score']:.3g} over threshold {alarm['threshold']:.3g})"
    )


def _before_text(block: dict[str, Any]) -> str:
    found = block.get("alarms_before_shift") or []
    said = ", ".join(f"{a['kind']} at sample {a['stream_index']}" for a in found)
    return f"{block['false_alarms_before_shift']}" + (f" ({said})" if said else "")


def _event_text(alarm: dict[str, Any]) -> str:
    if alarm["delay_samples"] is None:
        return "none"
    return (
        f"telemetry item {alarm['telemetry_id']}, raised {alarm['created_at_node']}, "
        f"received {alarm['received_at_control']}"
    )


def _acc_text(doc: dict[str, Any]) -> str:
    def pct(v: Any) -> str:
        return "n/a" if v is None else f"{v:.1%}"

    return f"{pct(doc['true'])} / {pct(doc['estimated'])} ({doc['labelled']} labelled)"
