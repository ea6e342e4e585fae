"""``edgeloop fleet``: a control plane and N agents as OS processes on loopback (``up``,
``down``, ``status``, ``nodes``), and the Typer app that gathers the fleet commands of the
modules beside it (publish, rollouts, monitoring, experiments)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from edgeloop.cli.fleet_experiment import app as experiment_app
from edgeloop.cli.fleet_monitor import fleet_alerts, fleet_monitor
from edgeloop.cli.fleet_options import (
    ControlUrl,
    Folder,
    Format,
    Home,
    Token,
    admin_client,
    fleet_folder,
)
from edgeloop.cli.fleet_publish import fleet_publish, publish_ref
from edgeloop.cli.fleet_rollout import fleet_deploy, fleet_rollback, fleet_rollouts, progress_line
from edgeloop.cli.output import OutputFormat, emit, err_console

app = typer.Typer(no_args_is_help=True)
# Names other modules and tests import from here (cli/fl.py, cli/data_capture.py,
# cli/retrain.py, cli/fleet_train.py, tests/cli/test_fleet_deploy_progress.py).
__all__ = ["ControlUrl", "Folder", "Format", "Home", "Token", "app", "progress_line"]
_folder = fleet_folder
_client = admin_client
_publish_ref = publish_ref


@app.command("up")
def fleet_up(
    nodes: Annotated[int, typer.Option(help="Number of agents (edge nodes) to start.")] = 3,
    folder: Folder = None,
    home: Home = None,
    format: Format = OutputFormat.TABLE,
    tls: Annotated[
        bool,
        typer.Option(
            "--tls", help="Every process over HTTPS, with a throwaway CA made in DIR/tls."
        ),
    ] = False,
    mtls: Annotated[
        bool,
        typer.Option(
            "--mtls", help="As --tls, and the control plane requires client certificates."
        ),
    ] = False,
    fl_data: Annotated[
        str | None, typer.Option(help="Give each agent a share of this bundled set (federated).")
    ] = None,
    partition: Annotated[str, typer.Option(help="iid or dirichlet:ALPHA (--fl-data).")] = "iid",
    fl_seed: Annotated[int, typer.Option(help="Seed of the --fl-data partition.")] = 42,
    names: Annotated[
        str | None,
        typer.Option(help="Comma-separated node names (one agent each; sets --nodes)."),
    ] = None,
    site: Annotated[
        str | None,
        typer.Option(help="Save a site profile NAME for EdgeMLManager(NAME) (home/sites.json)."),
    ] = None,
    shared_imports: Annotated[
        bool,
        typer.Option(
            "--shared-imports",
            help="Simulated fleet on one machine: fork the agents (and their torch workers) "
            "from processes that imported their libraries once, sharing those pages.",
        ),
    ] = False,
) -> None:
    """Start a control plane and N agents; print their URLs and the admin token."""
    from edgeloop.sdk.local_fleet import up
    from edgeloop.sdk.site import Site, check_site_name, save_site, sites_path

    where = _folder(folder, home)
    node_names = None if names is None else [n for n in names.split(",") if n.strip()]
    if node_names is not None:
        nodes = len(node_names)
    if site is not None:
        check_site_name(site)  # before any process starts
    shares = None
    if fl_data is not None:
        from edgeloop.federated.partition import Partition
        from edgeloop.sdk.fl_data import FlData

        shares = FlData(fl_data, Partition.parse(partition), fl_seed)
    fleet = up(
        where,
        nodes,
        progress=lambda msg: err_console.print(f"[bold cyan]▸[/] {msg}"),
        tls=tls,
        mutual_tls=mtls,
        fl_data=shares,
        names=node_names,
        shared_imports=shared_imports,
    )
    body = {**fleet.to_dict(), "dashboard_url": f"{fleet.control_url}/ui"}
    if site is not None:
        save_site(Site(site, fleet.control_url, fleet.admin_token), home)
        body["site"] = {"name": site, "profile": str(sites_path(home))}

    def render(console: Console) -> None:
        _table(console, body)
        console.print(f"dashboard: {body['dashboard_url']}  (sign in with the admin token)")
        console.print(f"admin token: {fleet.admin_token}")
        console.print(f"state: {where / 'fleet.json'}  (stop with `edgeloop fleet down`)")
        if site is not None:
            console.print(f'site profile {site!r} saved: EdgeMLManager("{site}")')

    emit(body, format, render)


@app.command("down")
def fleet_down(
    folder: Folder = None, home: Home = None, format: Format = OutputFormat.TABLE
) -> None:
    """Stop every process of the local fleet (agents first, then the control plane)."""
    from edgeloop.sdk.local_fleet import LocalFleet

    stopped = LocalFleet.load(_folder(folder, home)).down()
    body = {"stopped": stopped}

    def render(console: Console) -> None:
        for s in stopped:
            console.print(f"{s['name']} (pid {s['pid']}): {s['stopped']}")

    emit(body, format, render)


@app.command("status")
def fleet_status(
    folder: Folder = None, home: Home = None, format: Format = OutputFormat.TABLE
) -> None:
    """The fleet's processes and what the control plane knows of each node."""
    from edgeloop.sdk.control_client import ControlClient
    from edgeloop.sdk.local_fleet import LocalFleet

    fleet = LocalFleet.load(_folder(folder, home))
    body = fleet.to_dict(show_token=False)
    for proc in [body["control"], *body["agents"]]:
        proc["running"] = next(
            p.alive() for p in (fleet.control, *fleet.agents) if p.pid == proc["pid"]
        )
    if fleet.control.alive():
        with ControlClient(fleet.control_url, fleet.admin_token, tls=fleet.client_tls) as client:
            body["nodes"] = client.nodes()

    def render(console: Console) -> None:
        _table(console, body)

    emit(body, format, render)


def _table(console: Console, body: dict[str, Any]) -> None:
    t = Table(title=f"local fleet in {body['folder']}")
    for col in ("role", "name", "pid", "url", "running"):
        t.add_column(col)
    for proc in [body["control"], *body["agents"]]:
        running = proc.get("running")
        t.add_row(
            proc["role"],
            proc["name"],
            str(proc["pid"]),
            proc["url"],
            "" if running is None else ("yes" if running else "NO"),
        )
    console.print(t)


@app.command("nodes")
def fleet_nodes(
    control: ControlUrl = None,
    token: Token = None,
    folder: Folder = None,
    home: Home = None,
    format: Format = OutputFormat.TABLE,
) -> None:
    """The nodes the control plane knows: device class, active model, updater state, last seen."""
    with _client(control, token, folder, home) as client:
        nodes = client.nodes()

    def render(console: Console) -> None:
        t = Table(title="nodes")
        for col in ("name", "node id", "device class", "active", "updater", "last seen"):
            t.add_column(col)
        for n in nodes:
            rep = n.get("reported") or {}
            active = rep.get("active") or {}
            t.add_row(
                n["name"],
                n["node_id"],
                str(n.get("device_class")),
                f"{active['name']}:{active['version']}" if active else "-",
                str((rep.get("updater") or {}).get("state", "-")),
                str(n.get("last_seen")),
            )
        console.print(t)

    emit({"nodes": nodes}, format, render)


# The commands of the modules beside this one, in the order `--help` lists them.
app.command("publish")(fleet_publish)
app.command("deploy")(fleet_deploy)
app.command("rollouts")(fleet_rollouts)
app.command("rollback")(fleet_rollback)
app.command("monitor")(fleet_monitor)
app.command("alerts")(fleet_alerts)
app.add_typer(experiment_app, name="experiment")  # fleet A/B experiments (docs/experiments.md)
