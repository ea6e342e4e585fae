"""``edgeloop fleet deploy|rollouts|rollback``: guarded rollouts in waves, their progress and
their undoing."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from edgeloop.cli.fleet_options import ControlUrl, Folder, Format, Home, Token, admin_client
from edgeloop.cli.output import OutputFormat, emit


def fleet_deploy(
    model: Annotated[str, typer.Argument(help="Registry ref NAME:VERSION on the control plane.")],
    name: Annotated[
        str | None, typer.Option("--name", help="Deployment name [model name].")
    ] = None,
    waves: Annotated[
        str, typer.Option(help="Comma-separated waves: node counts or shares, e.g. 1,10%,100%.")
    ] = "1,50%,100%",
    soak_s: Annotated[float, typer.Option(help="Seconds each wave soaks before the next.")] = 30,
    watch_s: Annotated[float, typer.Option(help="Each node's health window in seconds.")] = 30,
    selector: Annotated[
        list[str], typer.Option("--selector", help="Node label KEY=VALUE (repeatable).")
    ] = [],  # noqa: B006 -- typer reads the default, never mutates it
    max_error_rate: Annotated[
        float | None, typer.Option(help="Guard: halt when a node's error rate exceeds this.")
    ] = None,
    max_p99_ms: Annotated[
        float | None, typer.Option(help="Guard: halt when a node's p99 exceeds this.")
    ] = None,
    require_requests: Annotated[
        int,
        typer.Option(
            help="Guard: a wave moves on only once each of its nodes served this many requests "
            "in its window (else wave_timeout_s halts it) [0: traffic not required].",
        ),
    ] = 0,
    force_spec_change: Annotated[
        bool,
        typer.Option(
            "--force-spec-change",
            help="Deploy even when MODEL's inputs or outputs differ from the deployed "
            "version's (its clients break) [refused otherwise].",
        ),
    ] = False,
    wait: Annotated[bool, typer.Option(help="Wait until the rollout ends.")] = False,
    control: ControlUrl = None,
    token: Token = None,
    folder: Folder = None,
    home: Home = None,
    format: Format = OutputFormat.TABLE,
) -> None:
    """Roll MODEL out in waves with a health guard; a breach halts and reverts the wave."""
    from edgeloop.core.errors import ConfigError

    labels = {}
    for item in selector:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--selector {item!r} is not KEY=VALUE", hint="e.g. site=plant-a")
        labels[key] = value
    guard: dict[str, Any] = {"require_self_test": True}
    if max_error_rate is not None:
        guard["max_error_rate"] = max_error_rate
    if max_p99_ms is not None:
        guard["max_p99_ms"] = max_p99_ms
    if require_requests:
        guard["required_requests"] = require_requests
    spec: dict[str, Any] = {
        "name": name or model.split(":")[0],
        "selector": {"labels": labels},
        "model": model,
        "plan": {
            "waves": [w.strip() for w in waves.split(",") if w.strip()],
            "soak_s": soak_s,
            "watch_s": watch_s,
            "guard": guard,
        },
    }
    if force_spec_change:
        spec["force_spec_change"] = True
    with admin_client(control, token, folder, home) as client:
        rollout = client.deploy(spec)
        if wait:
            rollout = _wait(client, rollout, timeout_s=3600)
    emit(rollout, format, lambda c: _render_rollout(c, rollout))


_ENDED = frozenset({"COMPLETED", "ROLLED_BACK"})


def progress_line(rollout: dict[str, Any]) -> str:
    """One line on where ``rollout`` (as the API shows it) stands: its wave, how many of the
    wave's nodes converged, every node's status, and why it ended or halted. Pure."""
    state, wave, waves = rollout["state"], int(rollout["wave"] or 0), len(rollout["waves"])
    nodes = list(rollout["nodes"].values())
    of_wave = [n for n in nodes if n.get("wave") == wave]
    converged = sum(n.get("status") == "healthy" for n in of_wave)
    counts = ", ".join(
        f"{sum(n.get('status') == s for n in nodes)} {s}"
        for s in ("healthy", "waiting", "failed", "not reached")
    )
    line = (
        f"{state}: wave {wave + 1} of {waves}, {converged}/{len(of_wave)} node(s) converged "
        f"({counts})"
    )
    events = rollout.get("events") or []
    if state in {"HALTED", "PAUSED", *_ENDED} and events:
        line += f" - {events[-1]['detail']}"
    return line


def _wait(client: Any, rollout: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """Poll ``rollout`` until it ends, printing a progress line on stderr at each change.

    Raises:
        TransportError: it did not end within ``timeout_s`` (the message names its state).
    """
    from edgeloop.cli.output import err_console
    from edgeloop.core.errors import TransportError

    deadline, last = time.monotonic() + timeout_s, ""
    while True:
        line = progress_line(rollout)
        if line != last:  # one line per change, not one per poll
            err_console.print(line, markup=False, highlight=False, soft_wrap=True)
            last = line
        if rollout["state"] in _ENDED:
            return rollout
        if time.monotonic() > deadline:
            raise TransportError(
                f"rollout {rollout['rollout_id']} is {rollout['state']} after {timeout_s} s",
                hint=f"edgeloop fleet rollouts {rollout['rollout_id']} shows it",
            )
        time.sleep(0.5)
        rollout = client.rollout(rollout["rollout_id"])


def fleet_rollouts(
    rollout_id: Annotated[str | None, typer.Argument(help="Show this rollout in full.")] = None,
    control: ControlUrl = None,
    token: Token = None,
    folder: Folder = None,
    home: Home = None,
    format: Format = OutputFormat.TABLE,
) -> None:
    """List rollouts, or show one with its per-node status and events."""
    with admin_client(control, token, folder, home) as client:
        if rollout_id is not None:
            one = client.rollout(rollout_id)
            emit(one, format, lambda c: _render_rollout(c, one))
            return
        rollouts = client.rollouts()

    def render(console: Console) -> None:
        t = Table(title="rollouts")
        for col in ("id", "name", "model", "state", "wave"):
            t.add_column(col)
        for r in rollouts:
            t.add_row(r["rollout_id"], r["name"], r["model"], r["state"], str(r["wave"]))
        console.print(t)

    emit({"rollouts": rollouts}, format, render)


def fleet_rollback(
    rollout_id: Annotated[str, typer.Argument(help="The rollout to roll back.")],
    to: Annotated[
        str | None, typer.Option("--to", help="NAME:VERSION to go back to [the previous].")
    ] = None,
    control: ControlUrl = None,
    token: Token = None,
    folder: Folder = None,
    home: Home = None,
    format: Format = OutputFormat.TABLE,
) -> None:
    """Send every node the rollout reached back to its previous (or the given) version."""
    with admin_client(control, token, folder, home) as client:
        rollout = client.rollback(rollout_id, to)
    emit(rollout, format, lambda c: _render_rollout(c, rollout))


def _render_rollout(console: Console, rollout: dict[str, Any]) -> None:
    console.print(
        f"rollout {rollout['rollout_id']} ({rollout['name']}, {rollout['model']}): "
        f"[bold]{rollout['state']}[/], wave {rollout['wave']}"
    )
    t = Table()
    for col in ("node", "node id", "wave", "status", "detail"):
        t.add_column(col)
    for node_id, n in rollout["nodes"].items():
        t.add_row(
            str(n.get("name") or node_id),  # the name `fleet nodes` shows
            node_id,
            str(n.get("wave")),
            str(n.get("status")),
            str(n.get("detail") or ""),
        )
    console.print(t)
