"""``edgeloop fl start|status|stop|list``: federated learning across the fleet's agents
(docs/federated.md). Each prints a table, or one JSON object with ``--format json``.

The control plane is the local fleet's (``edgeloop fleet up --fl-data digits``) unless
``--control``/``--token`` name another.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from edgeloop.cli.fleet import ControlUrl, Folder, Format, Home, Token, _client
from edgeloop.cli.output import OutputFormat, emit, err_console, na

app: typer.Typer = typer.Typer(
    help="Federated learning across the fleet's agents: start, status, stop, list.",
    no_args_is_help=True,
)
Task = Annotated[str, typer.Argument(help="The task id (from start or list).")]
_ENDED = ("done", "failed", "stopped")


def _render(doc: dict[str, Any]) -> Any:
    def render(console: Console) -> None:
        spec = doc["spec"]
        console.print(
            f"[bold]{doc['task_id']}[/] {spec['model']} ({spec['strategy']}"
            f"{', DP' if spec.get('dp') else ''}): [bold]{doc['state']}[/], round {doc['round']}"
            f" of {spec['rounds']} ({doc['phase']}), epsilon {na(doc.get('epsilon'), '{:.3f}')}"
        )
        t = Table(title="rounds")
        for col in ("round", "selected", "answered", "declined", "dropouts", "rejected",
                    "client loss", "accuracy", "epsilon", "s", "client cpu s", "bytes up",
                    "bytes down"):  # fmt: skip
            t.add_column(col)
        for h in doc["history"]:
            took = None if h.get("closed_at") is None else h["closed_at"] - h["started_at"]
            cpu = sum((h.get("client_cpu_s") or {}).values()) if h.get("client_cpu_s") else None
            t.add_row(str(h["round"]), str(len(h["selected"])), str(len(h["participants"])),
                      str(len(h.get("declined") or {})), str(len(h["dropouts"])),
                      str(len(h["rejected"])), na(h.get("client_loss"), "{:.4f}"),
                      na(h.get("accuracy"), "{:.4f}"), na(h.get("epsilon"), "{:.3f}"),
                      na(took, "{:.2f}"), na(cpu, "{:.3f}"), str(h["bytes_up"]),
                      str(h["bytes_down"]))  # fmt: skip
        console.print(t)
        last = doc["history"][-1] if doc["history"] else None
        if last and last.get("why"):
            detail = last.get("why_detail") or {}
            why = "; ".join(f"{n} {w} {detail.get(n, '')}".rstrip() for n, w in last["why"].items())
            console.print(f"round {last['round']} selection ({doc['spec']['selector']}): {why}")
        if doc.get("reason"):
            console.print(f"reason: {doc['reason']}")
        reg = doc.get("registration")
        if reg:
            console.print(f"registration: {reg.get('state')} {reg.get('ref') or ''}"
                          f"{reg.get('reason') or ''}")  # fmt: skip

    return render


@app.command("start")
def start(
    model: Annotated[str, typer.Option(help="Federated model: digits-cnn or digits-mlp.")],
    rounds: Annotated[int, typer.Option(help="Training rounds.")] = 5,
    clients_per_round: Annotated[int, typer.Option(help="Clients asked per round.")] = 2,
    min_clients: Annotated[int, typer.Option(help="Fewest answers a round needs.")] = 2,
    deadline_s: Annotated[float, typer.Option(help="Seconds a round waits for clients.")] = 60,
    strategy: Annotated[str, typer.Option(help="fedavg, fedprox, fedavgm, fedadam, ...")] = (
        "fedavg"
    ),
    param: Annotated[
        list[str], typer.Option("--param", help="Strategy parameter KEY=VALUE (repeatable).")
    ] = [],  # noqa: B006 (typer reads the default, never mutates it)
    selector: Annotated[
        str, typer.Option(help="uniform, fairness, resource, power-of-choice.")
    ] = "uniform",
    selector_param: Annotated[
        list[str],
        typer.Option(
            "--selector-param",
            help="Selector parameter KEY=VALUE (repeatable), e.g. for resource: min_battery=0.3, "
            "max_load=1.5, min_memory_mb=256, min_samples=50, device_classes=x86_64-cpu,...",
        ),
    ] = [],  # noqa: B006 (typer reads the default, never mutates it)
    seed: Annotated[int, typer.Option(help="Initial model and selection seed.")] = 0,
    lr: Annotated[float, typer.Option(help="Local SGD learning rate.")] = 0.05,
    epochs: Annotated[int, typer.Option(help="Local epochs per round.")] = 1,
    batch_size: Annotated[int, typer.Option(help="Local batch size.")] = 32,
    mu: Annotated[float, typer.Option(help="FedProx proximal weight on the clients.")] = 0.0,
    dp_noise: Annotated[
        float | None, typer.Option(help="DP-FedAvg noise multiplier z (turns DP on).")
    ] = None,
    dp_clip: Annotated[float, typer.Option(help="DP-FedAvg clip norm C.")] = 1.0,
    dp_delta: Annotated[float, typer.Option(help="DP delta for epsilon.")] = 1e-5,
    target_epsilon: Annotated[
        float | None, typer.Option(help="Refuse a round that would pass this epsilon.")
    ] = None,
    secagg: Annotated[
        bool,
        typer.Option(
            help="Secure aggregation (Bonawitz et al.): the control plane sees masked updates "
            "and their sum only; not with --dp, median or trimmed-mean; at least 2 clients.",
        ),
    ] = False,
    register_as: Annotated[
        str | None, typer.Option(help="Registry name of the result [fl-MODEL].")
    ] = None,
    wait: Annotated[bool, typer.Option(help="Wait until the task ends.")] = False,
    control: ControlUrl = None,
    token: Token = None,
    folder: Folder = None,
    home: Home = None,
    format: Format = OutputFormat.TABLE,
) -> None:
    """Start a federated task on the fleet's agents that hold a data share."""
    from edgeloop.core.errors import ConfigError

    params: dict[str, float] = {}
    for item in param:
        key, _, value = item.partition("=")
        try:
            params[key] = float(value)
        except ValueError:
            raise ConfigError(
                f"--param {item!r} is not KEY=NUMBER", hint="e.g. --param mu=0.01"
            ) from None
    selector_params: dict[str, float | str] = {}
    for item in selector_param:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(
                f"--selector-param {item!r} is not KEY=VALUE", hint="e.g. min_battery=0.3"
            )
        try:
            selector_params[key] = float(value)
        except ValueError:
            selector_params[key] = value
    body: dict[str, Any] = {
        "model": model, "strategy": strategy, "strategy_params": params, "rounds": rounds,
        "clients_per_round": clients_per_round, "min_clients": min_clients,
        "deadline_s": deadline_s, "selector": selector, "selector_params": selector_params,
        "seed": seed,
        "local": {"lr": lr, "epochs": epochs, "batch_size": batch_size, "mu": mu},
        "secagg": secagg, "register_as": register_as,
    }  # fmt: skip
    if dp_noise is not None:
        body["dp"] = {"noise_multiplier": dp_noise, "clip_norm": dp_clip, "delta": dp_delta,
                      "target_epsilon": target_epsilon}  # fmt: skip
    with _client(control, token, folder, home) as client:
        doc = client.call("POST", "/api/v1/fl/tasks", json=body)
        if wait:
            doc = _wait(client, doc["task_id"])
    emit(doc, format, _render(doc))


def _wait(client: Any, task_id: str) -> dict[str, Any]:
    seen = 0
    while True:
        doc: dict[str, Any] = client.call("GET", f"/api/v1/fl/tasks/{task_id}")
        closed = [h for h in doc["history"] if h.get("closed_at") is not None]
        for h in closed[seen:]:
            err_console.print(
                f"round {h['round']}: {len(h['participants'])} answered, "
                f"{len(h.get('declined') or {})} declined, "
                f"{len(h['dropouts'])} dropouts, client loss {na(h.get('client_loss'), '{:.4f}')}"
            )
        seen = len(closed)
        registering = (doc.get("registration") or {}).get("state") in ("pending", "running")
        if doc["state"] in _ENDED and not registering:
            return doc
        time.sleep(0.5)


@app.command("status")
def status(
    task: Task,
    control: ControlUrl = None,
    token: Token = None,
    folder: Folder = None,
    home: Home = None,
    format: Format = OutputFormat.TABLE,
) -> None:
    """A task's rounds: participants, dropouts, loss, accuracy, epsilon, bytes."""
    with _client(control, token, folder, home) as client:
        doc = client.call("GET", f"/api/v1/fl/tasks/{task}")
    emit(doc, format, _render(doc))


@app.command("stop")
def stop(
    task: Task,
    control: ControlUrl = None,
    token: Token = None,
    folder: Folder = None,
    home: Home = None,
    format: Format = OutputFormat.TABLE,
) -> None:
    """Stop a running task (the model of its last finished round is registered)."""
    with _client(control, token, folder, home) as client:
        doc = client.call("POST", f"/api/v1/fl/tasks/{task}/stop")
    emit(doc, format, _render(doc))


@app.command("list")
def list_tasks(
    control: ControlUrl = None,
    token: Token = None,
    folder: Folder = None,
    home: Home = None,
    format: Format = OutputFormat.TABLE,
) -> None:
    """Every federated task, oldest first."""
    with _client(control, token, folder, home) as client:
        doc = client.call("GET", "/api/v1/fl/tasks")

    def render(console: Console) -> None:
        t = Table(title="federated tasks")
        for col in ("task", "model", "strategy", "state", "rounds", "accuracy", "epsilon"):
            t.add_column(col)
        for s in doc["tasks"]:
            t.add_row(s["task_id"], s["model"], s["strategy"], s["state"],
                      f"{s['rounds_done']}/{s['rounds']}", na(s.get("accuracy"), "{:.4f}"),
                      na(s.get("epsilon"), "{:.3f}"))  # fmt: skip
        console.print(t)

    emit(doc, format, render)
