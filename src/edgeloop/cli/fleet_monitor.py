"""``edgeloop fleet monitor|alerts``: the fleet's drift state per model version and node, and
the alerts the control plane raised (docs/fleet-monitoring.md)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from edgeloop.cli.fleet_options import ControlUrl, Folder, Format, Home, Token, admin_client
from edgeloop.cli.output import OutputFormat, emit, na


def _pct(value: Any) -> str:
    return na(value * 100 if isinstance(value, int | float) else None, "{:.1f}%")


def _ratio(doc: Any) -> str:
    """The largest score over its threshold, with its kind."""
    found = [(v, k) for k, v in doc.items() if isinstance(v, int | float)]
    return "" if not found else "{1} {0:.2f}".format(*max(found))


def _drift(value: Any) -> str:
    return {True: "[red]drifting[/]", False: "ok", None: "unwatched"}.get(value, str(value))


def fleet_monitor(
    model: Annotated[str | None, typer.Option("--model", help="Only this model.")] = None,
    version: Annotated[str | None, typer.Option("--version", help="Only this version.")] = None,
    node: Annotated[str | None, typer.Option("--node", help="Only this node id.")] = None,
    control: ControlUrl = None,
    token: Token = None,
    folder: Folder = None,
    home: Home = None,
    format: Format = OutputFormat.TABLE,
) -> None:
    """Per model version and node: drift state, quality, windowed and estimated accuracy,
    latency, error rate, last seen."""
    params = {k: v for k, v in (("model", model), ("version", version), ("node", node)) if v}
    with admin_client(control, token, folder, home) as client:
        rows = client.call("GET", "/api/v1/monitoring", params=params)["rows"]

    def render(console: Console) -> None:
        t = Table(title="fleet monitoring (score/threshold > 1: drifting)")
        cols = ("version", "node", "drift", "bad/oor", "acc", "est", "p99 ms", "err", "seen")
        for col in cols:
            t.add_column(col)
        for r in rows:
            q = r.get("quality") or {}
            bad = sum(int(q.get(k) or 0) for k in ("nonfinite_samples", "wrong_shape"))
            quality = f"{bad}/{q.get('out_of_range', 0)}" if q else "-"
            drift = _drift(r["drifting"])
            if r.get("drift_ratio"):
                drift += f" {_ratio(r['drift_ratio'])}"
            t.add_row(
                f"{r['model']}:{r['version']}", r["node_id"][:8], drift, quality,
                _pct(r.get("windowed_accuracy")), _pct(r.get("estimated_accuracy")),
                na((r.get("latency_ms") or {}).get("p99"), "{:.1f}"), _pct(r.get("error_rate")),
                str(r.get("last_seen"))[11:19],
            )  # fmt: skip
        console.print(t)
        if not rows:
            console.print("no monitoring telemetry yet (nodes send it with their metrics)")

    emit({"rows": rows}, format, render)


def fleet_alerts(
    state: Annotated[str | None, typer.Option("--state", help="firing or resolved [both].")] = None,
    control: ControlUrl = None,
    token: Token = None,
    folder: Folder = None,
    home: Home = None,
    format: Format = OutputFormat.TABLE,
) -> None:
    """The control plane's alerts, firing first: rule, subject, since when, the figures."""
    params = {"state": state} if state else {}
    with admin_client(control, token, folder, home) as client:
        alerts = client.call("GET", "/api/v1/alerts", params=params)["alerts"]

    def render(console: Console) -> None:
        t = Table(title="alerts")
        for col in ("state", "rule", "subject", "first seen", "last seen", "figures"):
            t.add_column(col)
        for a in alerts:
            figures = ", ".join(f"{k}={v}" for k, v in a["figures"].items())
            state = "[red]firing[/]" if a["state"] == "firing" else a["state"]
            t.add_row(state, a["rule"], a["subject"], a["first_seen"], a["last_seen"], figures)
        console.print(t)

    emit({"alerts": alerts}, format, render)
