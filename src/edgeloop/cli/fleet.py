"""``edgeloop fleet up|down|status``: a control plane and N agents as OS processes on loopback."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from edgeloop.cli.output import OutputFormat, emit, err_console

app = typer.Typer(no_args_is_help=True)

Format = Annotated[OutputFormat, typer.Option("--format", help="table or json")]
Folder = Annotated[
    Path | None,
    typer.Option(
        "--dir", help="Fleet folder: one home per process, logs, fleet.json. Default HOME/fleet."
    ),
]
Home = Annotated[Path | None, typer.Option(help="edgeloop home (default EDGELOOP_HOME).")]


def _folder(folder: Path | None, home: Path | None) -> Path:
    from edgeloop.core.settings import Settings

    return (folder or Settings.load(home).home / "fleet").expanduser().resolve()


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


# --- admin commands against a control plane (the local fleet's by default) -----------------

ControlUrl = Annotated[
    str | None,
    typer.Option(
        "--control",
        envvar="EDGELOOP_CONTROL_URL",
        help="Control plane URL [the local fleet's, from fleet.json].",
    ),
]
Token = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="EDGELOOP_ADMIN_TOKEN",
        help="Admin token [the local fleet's, from fleet.json].",
    ),
]


def _client(control: str | None, token: str | None, folder: Path | None, home: Path | None) -> Any:
    """A ControlClient for ``--control``/``--token``, or for the local fleet in ``folder``."""
    from edgeloop.core.errors import ConfigError, EdgeError
    from edgeloop.sdk.control_client import ControlClient
    from edgeloop.sdk.local_fleet import LocalFleet

    tls = None
    if control is None or token is None:
        try:
            fleet = LocalFleet.load(_folder(folder, home))
        except EdgeError as exc:
            raise ConfigError(
                "no control plane given and no local fleet found",
                hint="pass --control URL --token T (or EDGELOOP_CONTROL_URL / "
                "EDGELOOP_ADMIN_TOKEN), or start one with `edgeloop fleet up`",
            ) from exc
        control = control or fleet.control_url
        token = token or fleet.admin_token
        tls = fleet.client_tls
    return ControlClient(control, token, tls=tls)


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


@app.command("publish")
def fleet_publish(
    model: Annotated[
        str,
        typer.Argument(
            help="A local registry ref NAME:VERSION (published with its manifest, keeping its "
            "name and version), or a model file to upload as the next version of --name."
        ),
    ],
    name: Annotated[str | None, typer.Option("--name", help="Model name (files only).")] = None,
    manifest: Annotated[
        Path | None,
        typer.Option("--manifest", help="Manifest JSON (Manifest.to_dict form; files only)."),
    ] = None,
    with_parents: Annotated[
        bool,
        typer.Option(
            "--with-parents", help="Publish the ref's ancestors first (those not on the fleet)."
        ),
    ] = False,
    checkpoint: Annotated[
        Path | None,
        typer.Option(help="Torch checkpoint folder the file was exported from (files only)."),
    ] = None,
    control: ControlUrl = None,
    token: Token = None,
    folder: Folder = None,
    home: Home = None,
    format: Format = OutputFormat.TABLE,
) -> None:
    """Publish a local registry version on the control plane under the same NAME:VERSION (or
    upload a model file as the next version of its name)."""
    from edgeloop.cli.registry import build_manifest

    if Path(model).is_file():
        value = build_manifest(Path(model), name, manifest)
        with _client(control, token, folder, home) as client:
            version = client.publish_model(Path(model), value, checkpoint=checkpoint)
        err_console.print(
            f"note: the control plane numbered it {version['ref']}, which may name another "
            "model in your local registry; to keep one identity, `edgeloop registry publish` "
            "the file and then `edgeloop fleet publish NAME:VERSION`",
            highlight=False,
        )
        emit(version, format, lambda c: c.print(f"published {version['ref']}"))
        return
    steps = _publish_ref(model, with_parents, name or manifest, control, token, folder, home)
    body = {**steps[-1], "steps": steps}

    def render(console: Console) -> None:
        for step in steps:
            console.print(f"{step['ref']}: {step['status']} (sha256 {step['sha256'][:12]}...)")

    emit(body, format, render)


def _publish_ref(
    text: str,
    with_parents: bool,
    renamed: object,
    control: str | None,
    token: str | None,
    folder: Path | None,
    home: Path | None,
) -> list[dict[str, Any]]:
    """Publish local version ``text`` (and, ``with_parents``, its ancestors root first);
    ``renamed``: --name or --manifest, which a ref refuses (it keeps its own)."""
    from edgeloop.core.errors import ConfigError
    from edgeloop.core.settings import Settings
    from edgeloop.registry.registry import Registry
    from edgeloop.registry.resolve import resolve_model

    settings = Settings.load(home)
    path, version = resolve_model(text, settings)  # lists what exists when the ref is unknown
    if version is None:
        raise ConfigError(
            f"{str(path)!r} is a folder, not a model file or a registry ref",
            hint="give a model file, or NAME:VERSION from `edgeloop registry list`",
        )
    if renamed:
        raise ConfigError(
            f"{text!r} is a registry ref: it is published with its own name and manifest",
            hint="drop --name/--manifest, or give a model file to publish it under a new name",
        )
    with Registry.open(settings) as registry:
        chain = registry.lineage(version.ref) if with_parents else [version]
        shas = {v.ref: v.artifact_sha256 for v in chain}
        if not with_parents and version.manifest.parent is not None:
            shas[version.manifest.parent] = registry.show(version.manifest.parent).artifact_sha256
        files = [registry.resolve(v.ref)[1] for v in chain]
        profiles = [registry.profile(v.ref)[1] for v in chain]  # verified; None: it has none
    steps: list[dict[str, Any]] = []
    with _client(control, token, folder, home) as client:
        for v, file, profile in reversed(list(zip(chain, files, profiles, strict=True))):
            parent = v.manifest.parent
            parent_sha = None if parent is None else shas.get(parent)
            step = client.publish_version(file, v, parent_sha, profile=profile)
            steps.append(step)
            err_console.print(f"{step['ref']}: {step['status']}", highlight=False)
    return steps


@app.command("deploy")
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
    with _client(control, token, folder, home) as client:
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


@app.command("rollouts")
def fleet_rollouts(
    rollout_id: Annotated[str | None, typer.Argument(help="Show this rollout in full.")] = None,
    control: ControlUrl = None,
    token: Token = None,
    folder: Folder = None,
    home: Home = None,
    format: Format = OutputFormat.TABLE,
) -> None:
    """List rollouts, or show one with its per-node status and events."""
    with _client(control, token, folder, home) as client:
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


@app.command("rollback")
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
    with _client(control, token, folder, home) as client:
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


# Fleet monitoring's commands live in their own module; registered on this Typer app.
from edgeloop.cli.fleet_monitor import fleet_alerts, fleet_monitor  # noqa: E402

app.command("monitor")(fleet_monitor)
app.command("alerts")(fleet_alerts)
from edgeloop.cli.fleet_experiment import app as experiment_app  # noqa: E402

app.add_typer(experiment_app, name="experiment")  # fleet A/B experiments (docs/experiments.md)
