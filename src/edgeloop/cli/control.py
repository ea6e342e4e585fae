"""``edgeloop control``: the control plane (fleet, deployments, rollouts, signed updates).

Once it listens it prints its URL and where the admin token is; ``--format json`` prints that
as one JSON line on stdout (``url``, ``pid``, ``home``, ``db``, ``admin_token_file``,
``tuf_root_version``) so a script can wait for it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from edgeloop.cli.output import OutputFormat, err_console
from edgeloop.cli.tls import TlsCert, TlsClientCa, TlsKey

if TYPE_CHECKING:
    from edgeloop.control.server import ReadyInfo


def control(
    port: Annotated[int, typer.Option("--port", help="TCP port; 0 picks a free one.")] = 8700,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    home: Annotated[
        Path | None, typer.Option("--home", help="State folder [EDGELOOP_HOME or ~/.edgeloop].")
    ] = None,
    db: Annotated[
        str | None,
        typer.Option("--db", help="SQLAlchemy URL [sqlite in HOME; postgresql+psycopg://...]."),
    ] = None,
    artifacts: Annotated[
        str | None,
        typer.Option(
            "--artifacts",
            envvar="EDGELOOP_ARTIFACTS",
            help="fsspec URL of the artifact store (s3://bucket/models, ...) [HOME/artifacts].",
        ),
    ] = None,
    admin_token: Annotated[
        str | None,
        typer.Option(
            "--admin-token",
            envvar="EDGELOOP_ADMIN_TOKEN",
            help="Admin token [created once in HOME/control/admin.token].",
        ),
    ] = None,
    timestamp_expiry_s: Annotated[
        int, typer.Option("--timestamp-expiry-s", help="TUF timestamp lifetime in seconds.")
    ] = 86400,
    tick_s: Annotated[float, typer.Option("--tick-s", help="Seconds between rollout ticks.")] = 1.0,
    max_model_mb: Annotated[
        int | None,
        typer.Option("--max-model-mb", help="Largest model upload in MiB; bigger: 413 [2048]."),
    ] = None,
    body_timeout_s: Annotated[
        float | None,
        typer.Option("--body-timeout-s", help="Seconds to receive a request body; then 408 [30]."),
    ] = None,
    upload_timeout_s: Annotated[
        float | None,
        typer.Option("--upload-timeout-s", help="The same for a model upload [900]."),
    ] = None,
    header_timeout_s: Annotated[
        float | None,
        typer.Option(
            "--header-timeout-s",
            help="Seconds for a request's headers to arrive; then the connection closes [10].",
        ),
    ] = None,
    max_connections: Annotated[
        int | None,
        typer.Option(
            "--max-connections",
            help="Connections open at once; one more gets 503 [16384, or ulimit -n - 256].",
        ),
    ] = None,
    alert_webhook: Annotated[
        str | None,
        typer.Option(
            "--alert-webhook",
            help="POST each alert that fires or resolves to this URL (docs/fleet-monitoring.md).",
        ),
    ] = None,
    alert_rules: Annotated[
        Path | None,
        typer.Option(
            "--alert-rules",
            help="A JSON file of alert rules (default: 1 node drifting; a node silent 300 s).",
        ),
    ] = None,
    alert_every_s: Annotated[
        float,
        typer.Option("--alert-every-s", help="Seconds between two alert rule evaluations."),
    ] = 15.0,
    retrain_policies: Annotated[
        Path | None,
        typer.Option(
            "--retrain-policies",
            help="A JSON file of retraining policies: an alert that opens, or a schedule "
            "('every': '24h', 'at': '02:00' UTC) that comes due, starts a retraining job "
            "(docs/retraining.md).",
        ),
    ] = None,
    format: Annotated[
        OutputFormat, typer.Option("--format", help="table or json (the ready line)")
    ] = OutputFormat.TABLE,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    tls_client_ca: TlsClientCa = None,
) -> None:
    """Run the control plane until interrupted."""
    from edgeloop.control.alerting import Alerting, load_rules
    from edgeloop.control.alerts import DEFAULT_RULES
    from edgeloop.control.limits import wire_limits
    from edgeloop.control.loop import check_settings
    from edgeloop.control.plane import ControlPlane
    from edgeloop.control.server import run
    from edgeloop.control.webhook import WebhookConfig
    from edgeloop.core.tls import TlsConfig, server_context
    from edgeloop.pipeline.retrain_policy import load_policies
    from edgeloop.registry.update_repo import Expiry

    check_settings(timestamp_expiry_s, tick_s)  # before anything is opened or written
    rules = DEFAULT_RULES if alert_rules is None else load_rules(alert_rules)
    hook = None if alert_webhook is None else WebhookConfig(alert_webhook)
    alerting = Alerting(rules, hook, every_s=alert_every_s)
    policies = None if retrain_policies is None else load_policies(retrain_policies)
    tls = TlsConfig(cert=tls_cert, key=tls_key, client_ca=tls_client_ca)
    server_context(tls)  # a bad certificate or key: refused before anything is opened
    limits = wire_limits(
        max_model_mb, body_timeout_s, upload_timeout_s, header_timeout_s, max_connections
    )
    plane, _ = ControlPlane.open(
        home, db, admin_token, Expiry(timestamp_s=timestamp_expiry_s), artifacts
    )
    token_file = None if admin_token else plane.settings.home / "control" / "admin.token"
    if policies is not None:
        from edgeloop.control.jobs_api import PolicyTrigger

        alerting.on_opened = PolicyTrigger(policies, plane.settings)

    def on_ready(info: ReadyInfo) -> None:
        if format is OutputFormat.JSON:
            sys.stdout.write(json.dumps(info.to_dict()) + "\n")
            sys.stdout.flush()
            return
        err_console.print(f"control plane listening on [bold]{info.url}[/] (pid {info.pid})")
        where = token_file if token_file is not None else "given with --admin-token"
        err_console.print(f"admin token: {where}", highlight=False)
        err_console.print(f"home: {info.home}   database: {info.db}", highlight=False)

    run(
        plane,
        host=host,
        port=port,
        on_ready=on_ready,
        admin_token_file=token_file,
        tick_s=tick_s,
        alerting=alerting,
        limits=limits,
        tls=tls,
    )
