"""``edgeloop agent``: the edge agent (enroll, reconcile, update with A/B slots, serve).

Progress goes to stderr; once serving, one JSON object on stdout (url, pid, home, the active
model and its start self-test) so a script can wait for it.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from edgeloop.cli.output import err_console
from edgeloop.cli.tls import CaBundle, TlsCert, TlsClientCa, TlsClientCert, TlsClientKey, TlsKey


def agent(
    control: Annotated[str, typer.Option("--control", help="Control plane URL.")],
    port: Annotated[int, typer.Option("--port", help="Inference port; 0 picks a free one.")] = 8000,
    home: Annotated[
        Path | None,
        typer.Option("--home", help="Agent state folder [EDGELOOP_HOME or ~/.edgeloop]."),
    ] = None,
    enroll_token: Annotated[
        str | None,
        typer.Option(
            "--enroll-token",
            envvar="EDGELOOP_ENROLL_TOKEN",
            help="One-use enrollment token (only needed the first time). Prefer the "
            "EDGELOOP_ENROLL_TOKEN environment variable or --enroll-token-file: a command "
            "line is visible to every user in `ps`.",
        ),
    ] = None,
    enroll_token_file: Annotated[
        Path | None,
        typer.Option(
            "--enroll-token-file",
            envvar="EDGELOOP_ENROLL_TOKEN_FILE",
            help="A file holding the one-use enrollment token (instead of --enroll-token).",
        ),
    ] = None,
    tuf_root: Annotated[
        Path | None,
        typer.Option(
            "--tuf-root",
            help="The control plane's TUF root.json, given out of band (else trusted on "
            "first use from the enrollment answer).",
        ),
    ] = None,
    poll_s: Annotated[
        float, typer.Option("--poll-s", help="Seconds between desired-state polls.")
    ] = 5.0,
    name: Annotated[
        str | None, typer.Option("--name", help="Node name sent at enrollment [host name].")
    ] = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    download_deadline_s: Annotated[
        float, typer.Option("--download-deadline-s", help="Longest one artifact download may take.")
    ] = 300.0,
    log_level: Annotated[str, typer.Option("--log-level", help="Log level.")] = "info",
    outbox_mb: Annotated[
        float,
        typer.Option(
            "--outbox-mb",
            envvar="EDGELOOP_OUTBOX_MB",
            help="Cap of the telemetry outbox (MiB of payload); over it the oldest samples, "
            "then metrics, then events are dropped and the drops counted.",
        ),
    ] = 64.0,
    metrics_every_s: Annotated[
        float,
        typer.Option(
            "--metrics-every-s",
            envvar="EDGELOOP_METRICS_EVERY_S",
            help="Seconds between metrics snapshots put into the outbox.",
        ),
    ] = 60.0,
    sample_rate: Annotated[
        float,
        typer.Option(
            "--sample-rate",
            envvar="EDGELOOP_SAMPLE_RATE",
            help="Share of inference requests whose inputs/outputs are sampled (0 disables).",
        ),
    ] = 0.01,
    route: Annotated[
        list[str] | None,
        typer.Option(
            "--route",
            help="An MQTT route, 'FROM <topic filter> INTO <model> THEN <topic template>' "
            "(optionally prefixed 'name:'); repeat for several.",
        ),
    ] = None,
    mqtt: Annotated[
        str,
        typer.Option(
            "--mqtt", envvar="EDGELOOP_MQTT", help="MQTT broker for --route: mqtt://host[:port]."
        ),
    ] = "mqtt://127.0.0.1:1883",
    parent: Annotated[
        str | None,
        typer.Option(
            "--parent",
            envvar="EDGELOOP_PARENT",
            help="A parent agent (gateway), http://HOST:PORT: artifacts come from its tier "
            "cache first (still TUF-verified here), the control plane when it fails.",
        ),
    ] = None,
    parent_cascade: Annotated[
        str | None,
        typer.Option(
            "--parent-cascade",
            help="[MODEL@]THRESHOLD: rows the served model is less sure of than THRESHOLD go "
            "to the parent's MODEL (default: the same name); this node's answer stands when "
            "the parent fails.",
        ),
    ] = None,
    serve_children: Annotated[
        bool,
        typer.Option(
            "--serve-children",
            help="Serve GET /tier/targets/... from a cache to child nodes of the same control "
            "plane (one uplink download per artifact for the whole site).",
        ),
    ] = False,
    tier_cache_mb: Annotated[
        float,
        typer.Option("--tier-cache-mb", help="Cap of the children's artifact cache (MiB)."),
    ] = 2048.0,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    tls_client_ca: TlsClientCa = None,
    ca_bundle: CaBundle = None,
    tls_client_cert: TlsClientCert = None,
    tls_client_key: TlsClientKey = None,
    pin_control_cert: Annotated[
        bool,
        typer.Option(
            "--pin-control-cert",
            help="Pin the control plane's certificate at enrollment (kept in the agent's "
            "home): a different one is refused later, even if --ca-bundle vouches for it.",
        ),
    ] = False,
) -> None:
    """Run the edge agent until interrupted (Ctrl-C or SIGTERM)."""
    from edgeloop.agent.home import AgentHome
    from edgeloop.agent.identity import trust_control
    from edgeloop.agent.process import run
    from edgeloop.agent.reconcile import AgentOptions
    from edgeloop.agent.route_host import RouteSettings
    from edgeloop.agent.telemetry import TelemetrySettings
    from edgeloop.agent.tier import TierSettings
    from edgeloop.core.settings import Settings
    from edgeloop.core.tls import TlsConfig, server_context

    logging.basicConfig(
        level=log_level.upper(), stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
    )
    settings = Settings.load(home)
    tls = TlsConfig(
        cert=tls_cert,
        key=tls_key,
        client_ca=tls_client_ca,
        ca_bundle=ca_bundle,
        client_cert=tls_client_cert,
        client_key=tls_client_key,
    )
    server_context(tls)  # a bad certificate or key: refused before anything starts
    agent_home = AgentHome.under(settings.home)
    trust_control(agent_home, tls, pin=pin_control_cert)
    options = AgentOptions(
        control=control,
        enroll_token=_enroll_token(enroll_token, enroll_token_file),
        name=name or socket.gethostname(),
        tuf_root=tuf_root,
        poll_s=poll_s,
        download_deadline_s=download_deadline_s,
    )

    telemetry = TelemetrySettings(outbox_mb, metrics_every_s, sample_rate)
    routes = RouteSettings.parse(route or [], mqtt, f"edgeloop-agent-{options.name}")
    tier = TierSettings.parse(parent, parent_cascade, serve_children, tier_cache_mb)

    def announce(ready: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(ready) + "\n")
        sys.stdout.flush()
        err_console.print(f"agent serving on {ready['url']} (pid {ready['pid']})")

    run(
        agent_home,
        options,
        host=host,
        port=port,
        announce=announce,
        telemetry=telemetry,
        routes=routes,
        tier=tier,
        tls=tls,
    )


def _enroll_token(given: str | None, file: Path | None) -> str | None:
    """The enrollment token from the flag/environment or from ``file``. Raises ConfigError."""
    from edgeloop.core.errors import ConfigError

    if file is None:
        return given
    if given:
        raise ConfigError(
            "both an enrollment token and --enroll-token-file were given",
            hint="give one (EDGELOOP_ENROLL_TOKEN may be set in the environment)",
        )
    try:
        token = file.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the enrollment token file {str(file)!r}: {exc}") from exc
    if not token:
        raise ConfigError(f"the enrollment token file {str(file)!r} is empty")
    return token
