"""``edgeloop fleet experiment start|status|promote|revert|list``: fleet A/B experiments
(docs/experiments.md). Each prints a table, or one JSON object with ``--format json``."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from edgeloop.cli.fleet_options import ControlUrl, Folder, Format, Home, Token, admin_client
from edgeloop.cli.output import OutputFormat, emit, na

app: typer.Typer = typer.Typer(
    help="Fleet A/B experiments: a challenger beside the champion, a sequential test, "
    "then promote or revert.",
    no_args_is_help=True,
)
Exp = Annotated[str, typer.Argument(help="The experiment id (from start or list).")]


def _pct(value: Any) -> str:
    return na(value * 100 if isinstance(value, int | float) else None, "{:.1f}%")


def _render(doc: dict[str, Any]) -> Any:
    def render(console: Console) -> None:
        share = (
            "a copy of all traffic"
            if doc.get("mode") == "shadow"
            else f"{_pct(doc['split'])} of traffic"
        )
        console.print(
            f"[bold]{doc['experiment_id']}[/] {doc['model']}: champion {doc['champion']} vs "
            f"challenger {doc['challenger']} ({share}), "
            f"metric {doc['metric']}: [bold]{doc['state']}[/], decision "
            f"[bold]{doc.get('decision') or 'not yet'}[/]"
        )
        if doc.get("caveat"):
            console.print(f"[yellow]{doc['caveat']}[/]")
        arms = doc.get("arms") or {}
        if arms:
            t = Table(title="arms (summed over the nodes)")
            for col in ("arm", "version", "requests", "errors", "p99 ms", "labelled", "accuracy",
                        "confidence"):  # fmt: skip
                t.add_column(col)
            for role in ("champion", "challenger"):
                a = arms.get(role) or {}
                t.add_row(role, str(a.get("version")), str(a.get("requests")),
                          str(a.get("errors")), na(a.get("latency_p99_ms"), "{:.2f}"),
                          str(a.get("labelled")), _pct(a.get("accuracy")),
                          na(a.get("confidence_mean"), "{:.3f}"))  # fmt: skip
            console.print(t)
        primary = (doc.get("evidence") or {}).get("primary")
        if primary:
            console.print(
                f"effect {primary['effect']:+.4f} (challenger - champion), always-valid "
                f"p = {primary['p_value']:.4g}, confidence sequence "
                f"[{na(primary['cs_low'], '{:+.4f}')}, {na(primary['cs_high'], '{:+.4f}')}]"
            )
        elif doc.get("waiting_for"):
            console.print(f"waiting: {doc['waiting_for']}")

    return render


def _guardrail(text: str) -> tuple[str, float]:
    from edgeloop.core.errors import ConfigError

    metric, _, margin = text.partition(":")
    try:
        return metric.strip(), float(margin)
    except ValueError:
        raise ConfigError(
            f"--guardrail {text!r} is not METRIC:MARGIN", hint="e.g. --guardrail error_rate:0.01"
        ) from None


@app.command("start")
def start(
    name: Annotated[str, typer.Argument(help="A name for the experiment.")],
    model: Annotated[str, typer.Option("--model", help="The model's name.")],
    champion: Annotated[int, typer.Option("--champion", help="The version serving now.")],
    challenger: Annotated[int, typer.Option("--challenger", help="The version to try.")],
    split: Annotated[
        float | None,
        typer.Option(
            "--split", help="Percent of the traffic the challenger gets, in (0, 100) [50]."
        ),
    ] = None,
    shadow: Annotated[
        bool,
        typer.Option(
            "--shadow",
            help="The challenger gets a copy of every request instead "
            "(answers nobody; metric error_rate, latency_p99 or confidence).",
        ),
    ] = False,
    metric: Annotated[
        str,
        typer.Option(
            "--metric",
            help="accuracy, error_rate, latency_p99 or confidence (mean top-1 probability: "
            "a proxy, not correctness; the status says so).",
        ),
    ] = "accuracy",
    nodes: Annotated[
        str | None, typer.Option("--nodes", help="Comma-separated node names or ids [all].")
    ] = None,
    label: Annotated[
        list[str] | None,
        typer.Option("--label", help="KEY=VALUE: only nodes with this label (repeatable)."),
    ] = None,
    min_effect: Annotated[
        float, typer.Option("--min-effect", help="Smallest difference worth finding.")
    ] = 0.02,
    alpha: Annotated[float, typer.Option("--alpha", help="False positive rate.")] = 0.05,
    guardrail: Annotated[
        list[str] | None,
        typer.Option(
            "--guardrail",
            help="METRIC:MARGIN, e.g. error_rate:0.01 or confidence:0.05 (repeatable).",
        ),
    ] = None,
    mixing: Annotated[
        str,
        typer.Option(
            "--mixing",
            help="two_point (fewest samples at --min-effect) or normal (also finds effects "
            "well below it).",
        ),
    ] = "two_point",
    watch_s: Annotated[float, typer.Option("--watch-s", help="Each node's watch window.")] = 30.0,
    soak_s: Annotated[float, typer.Option("--soak-s", help="Soak between waves.")] = 30.0,
    control: ControlUrl = None,
    token: Token = None,
    folder: Folder = None,
    home: Home = None,
    format: Format = OutputFormat.TABLE,
) -> None:
    """Roll the champion out with the challenger beside it, traffic split by --split."""
    from edgeloop.sdk.experiments import share_of

    body: dict[str, Any] = {
        "name": name, "model": model, "champion": champion, "challenger": challenger,
        "metric": metric, "min_effect": min_effect,
        "alpha": alpha,
        "plan": {"watch_s": watch_s, "soak_s": soak_s}, "mixing": mixing,
        "guardrails": dict(_guardrail(g) for g in guardrail or []),
    }  # fmt: skip
    if shadow:
        body["shadow"] = True
        if split is not None:
            body["split"] = share_of(split, "--split")  # refused: a shadow takes no split
    else:
        body["split"] = share_of(50.0 if split is None else split, "--split")
    if label:
        pairs = [item.partition("=") for item in label]
        body["selector"] = {"labels": {k.strip(): v.strip() for k, _, v in pairs}}
    if nodes:
        body["nodes"] = [n.strip() for n in nodes.split(",") if n.strip()]
    with admin_client(control, token, folder, home) as client:
        doc = client.call("POST", "/api/v1/experiments", json=body)
    emit(doc, format, _render(doc))


@app.command("status")
def status(
    experiment: Exp,
    control: ControlUrl = None,
    token: Token = None,
    folder: Folder = None,
    home: Home = None,
    format: Format = OutputFormat.TABLE,
) -> None:
    """Per-arm figures, the sequential decision and its evidence (a fresh look)."""
    with admin_client(control, token, folder, home) as client:
        doc = client.call("GET", f"/api/v1/experiments/{experiment}")
    emit(doc, format, _render(doc))


@app.command("promote")
def promote(
    experiment: Exp,
    force: Annotated[
        bool, typer.Option("--force", help="Promote before the test decided for it.")
    ] = False,
    control: ControlUrl = None,
    token: Token = None,
    folder: Folder = None,
    home: Home = None,
    format: Format = OutputFormat.TABLE,
) -> None:
    """Roll the challenger out to the experiment's nodes (the guarded rollout)."""
    with admin_client(control, token, folder, home) as client:
        path = f"/api/v1/experiments/{experiment}/promote"
        doc = client.call("POST", path, json={"force": force})
    emit(doc, format, _render(doc))


@app.command("revert")
def revert(
    experiment: Exp,
    control: ControlUrl = None,
    token: Token = None,
    folder: Folder = None,
    home: Home = None,
    format: Format = OutputFormat.TABLE,
) -> None:
    """Roll the champion alone back out; the experiment ends."""
    with admin_client(control, token, folder, home) as client:
        doc = client.call("POST", f"/api/v1/experiments/{experiment}/revert", json={})
    emit(doc, format, _render(doc))


app.command("stop", help="The same as revert.")(revert)


@app.command("list")
def listing(
    control: ControlUrl = None,
    token: Token = None,
    folder: Folder = None,
    home: Home = None,
    format: Format = OutputFormat.TABLE,
) -> None:
    """Every experiment: model, arms, split, state, decision."""
    with admin_client(control, token, folder, home) as client:
        rows = client.call("GET", "/api/v1/experiments")["experiments"]

    def render(console: Console) -> None:
        t = Table(title="experiments")
        for col in ("id", "name", "model", "arms", "split", "metric", "state", "decision"):
            t.add_column(col)
        for r in rows:
            t.add_row(r["experiment_id"], r["name"], r["model"],
                      f"{r['champion']} vs {r['challenger']}", _pct(r["split"]),
                      r["metric"] + (" (proxy)" if r.get("caveat") else ""),
                      r["state"], str(r.get("decision") or "-"))  # fmt: skip
        console.print(t)

    emit({"experiments": rows}, format, render)
